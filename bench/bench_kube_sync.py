"""Sync benchmark on Kubernetes: hub-to-agent delivery with the hub store on a real kube-apiserver.

Run: `python bench/bench_kube_sync.py` (about 45 s on 2 cores). Prints a table; it
is not a test. Needs the test bed (`bash scripts/testbed.sh`); exits with its hint without.

Setup, all real and on loopback, all in one temp dir that is removed at the end:
  apiserver the test bed's `kube-apiserver` on its own `etcd` 3.6 (`mooring._kubeapi`),
            with Argo CD's CRDs; every client below uses its admin kubeconfig
  principal `python -m mooring principal serve --coordination kubernetes --store
            kubernetes://...` (Leases and hub store on the apiserver; agent X is namespace
            hub-X, its Applications real `argoproj.io/v1alpha1` objects there), --metrics
  fleet     20 real `agent.Agent` instances (managed mode) in ONE other process
            (`bench/_fleet.py fleet`), each with its own SQLite file
  writer    this process: `principal.HubStore.apply_desired` on the same
            `kubernetes://` store, one task per agent writing its 50 Applications one
            after another (20 writers at once); each call is an Application read (its
            checksum and resourceVersion) and a create or a JSON patch that compares
            the resourceVersion (the agent's mode is read once per agent and cached)
The code and columns are `bench/bench_sync.py`'s (`run_round`): rounds `create` (1,000
new Applications) and `update` (all changed), started once every agent is welcomed and
resynced; each spec carries `mooring.bench/written-at` (time.time_ns() just before the
apply_desired call) and the fleet records the wall-clock time right after the agent's
SQLite write.
  thr/s     changes applied on agents / (last apply - first write)
  p50/p99   per change: written-at -> applied on the agent
  write/s   writer calls per second: changes / (first write - last apply_desired return)
  call ms   p50 duration of one apply_desired call

Beside it, same run, same columns:
  etcd  the same 20 x 50 through a principal whose hub store (and coordination) is a
        real one-member etcd (`mooring._services.EtcdCluster`, the test bed's etcd 3.6,
        the very binary under the apiserver), a new fleet, the same writer code
  solo  ONE agent x 200 Applications through the Kubernetes principal, `--solo-writers`
        (20) writer tasks sharing its 200 (so the writer is no slower than in the
        fleet rounds): thr/s is that one agent's events/s. Upstream argocd-agent
        measured a ceiling of about 10 events/s per agent (argocd-agent issue #1051:
        a per-agent lock around each ~0.1 s Kubernetes write; note that issue is the
        agent->principal direction); our target is >= 100
The limit, same run, same apiserver (its principal stopped first, so nothing else runs):
  raw   the same 1,000 Application creates, then 1,000 updates (a PUT of the whole
        object carrying the resourceVersion from the create: a compare-and-swap, one
        call per change), issued by this process with the official client
        (`kubernetes.client.CustomObjectsApi`, urllib3 pool as large as the thread
        count, no retries), one thread per agent namespace (20 at once), each writing
        its 50 one after another; no Mooring, no watch, no agent. thr/s = write/s =
        writes / (last return - first call); p50/p99 = one call
Ratios: the Kubernetes store's thr/s over raw write/s (what is left of the apiserver's
write rate after Mooring's extra reads, its watch and the agents), and over the etcd
store's thr/s (the price of the apiserver in front of etcd).

CPU: seconds of CPU each process used during each run (from /proc): principal, fleet,
apiserver, kube-etcd (the apiserver's), etcd (the etcd store's) and bench (this process:
the writer or the raw threads); about 1 s per wall second is one saturated core. "other"
is what the whole host was busy (/proc/stat) beyond those: the phases run one after
another, so load from outside (a test suite) skews them unevenly; a warning says so.
API: the apiserver's own `apiserver_request_total` counted around each run (requests per
change, by verb), and its priority-and-fairness rejections (HTTP 429) over the whole run.

Reading it: on Kubernetes one apply_desired is two apiserver requests (the Application,
for its checksum and resourceVersion; the write), a raw change is one, so at the same
apiserver request rate kube/raw is about 1/2 (it was 1/3 before the mode was cached). Where
thr/s equals write/s the writer, not the delivery, bounds the round; what delivery adds
after the write is "apply_desired return -> applied" in the last lines (it can be
slightly negative: the agent applied before the writer's task resumed). All clients use
the admin identity (system:masters), which priority-and-fairness exempts from queuing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import functools
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _running as running  # noqa: E402
import bench_sync as sync  # noqa: E402
import kubernetes.client  # noqa: E402
import kubernetes.config  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

import principal  # noqa: E402
from mooring import _kubeapi as kubeapi  # noqa: E402
from mooring import _services as services  # noqa: E402
from principal import _pki as pki  # noqa: E402
from tests import _testbed as testbed  # noqa: E402

HUB = "bench"
HUB_PREFIX = "hub-"  # agent X is namespace hub-X
LEASES = "mooring-bench"  # the principal's Lease namespace
SOLO = "solo"  # the lone agent: solo-000
RAW = "raw"  # the raw writes' namespaces: raw-000 ...
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "applications"
UPSTREAM_PER_AGENT = 10.0  # events/s, argocd-agent issue #1051
TARGET_PER_AGENT = 100.0
REQUEST_LINE = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")
FLOWCONTROL_LINE = re.compile(r"^apiserver_flowcontrol_rejected_requests_total\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# ----------------------------------------------------------------------------- apiserver
async def start_in_thread(start: Callable[[], object]) -> None:
    """`start()` in a worker thread; when cancelled meanwhile (Ctrl-C, the budget), wait
    for it to finish before re-raising, so the caller's cleanup stops what it started
    rather than racing it."""
    started = asyncio.ensure_future(asyncio.to_thread(start))
    try:
        await asyncio.shield(started)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await started
        raise


def apiserver_for(root: Path) -> kubeapi.KubeAPIServer:
    """The test bed's kube-apiserver on its own etcd 3.6 with Argo CD's CRDs (not yet
    started); exits when the test bed is not built."""
    apiserver, etcd36, crds = (
        testbed.binary("kube-apiserver"),
        testbed.binary("etcd"),
        testbed.argocd_crds(),
    )
    if not (apiserver.is_file() and etcd36.is_file() and crds):
        sys.exit(f"bench_kube_sync: the test bed is not built: {testbed.HINT}")
    return kubeapi.KubeAPIServer(root, binary=str(apiserver), etcd_binary=str(etcd36), crds=crds)


def api_metrics(apiserver: kubeapi.KubeAPIServer) -> dict[tuple[str, ...], float]:
    """apiserver_request_total summed by (verb, resource, code), and P&F rejections by
    ("rejected", priority level, reason)."""
    status, text = apiserver.request("GET", "/metrics", timeout=30)
    if status != 200:
        raise kubeapi.KubeAPIError(f"apiserver /metrics: HTTP {status}")
    out: dict[tuple[str, ...], float] = collections.defaultdict(float)
    for line in text.splitlines():
        if match := REQUEST_LINE.match(line):
            labels = dict(LABEL.findall(match[1]))
            key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("code", ""))
            out[key] += float(match[2])
        elif match := FLOWCONTROL_LINE.match(line):
            labels = dict(LABEL.findall(match[1]))
            out[("rejected", labels.get("priority_level", ""), labels.get("reason", ""))] += float(
                match[2]
            )
    return out


def api_delta(
    before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float]
) -> dict[tuple[str, ...], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def requests_by_verb(delta: dict[tuple[str, ...], float]) -> dict[str, float]:
    """Requests of the run by verb (watches and P&F rejections left out)."""
    out: dict[str, float] = collections.defaultdict(float)
    for key, value in delta.items():
        if key[0] not in ("rejected", "WATCH", "CONNECT"):
            out[key[0]] += value
    return dict(out)


# ----------------------------------------------------------------------------- host
def host_busy() -> float:
    """CPU seconds the whole host has been busy (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / sync.CLK_TCK


def add_other(result: sync.Result, busy: float) -> None:
    """result.cpu["other"]: what the host spent beyond this bench's processes."""
    result.cpu["other"] = max(0.0, busy - sum(result.cpu.values()))


# ----------------------------------------------------------------------------- raw limit
def raw_client(kubeconfig: Path, *, pool: int) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    configuration.retries = False
    configuration.connection_pool_maxsize = pool
    return kubernetes.client.ApiClient(configuration)


def raw_round(
    api: kubernetes.client.CustomObjectsApi,
    *,
    round_name: str,
    namespaces: Sequence[str],
    apps: int,
    revision: str,
    created: dict[tuple[str, str], dict[str, Any]],
    pids: dict[str, int],
    throttled: collections.Counter[str],
) -> sync.Result:
    """One thread per namespace, each writing its `apps` Applications one after another:
    creates (remembered in `created`) or compare-and-swap PUTs of what was created."""
    durations: list[float] = []
    ends: list[float] = []
    errors: list[BaseException] = []
    ready = threading.Barrier(len(namespaces) + 1)
    lock = threading.Lock()

    def one(namespace: str) -> None:
        mine: list[float] = []
        try:  # warm: open this thread's connection, as the principal's are open
            api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1)
        except BaseException as err:
            errors.append(err)
        ready.wait()
        try:
            for i in range(apps):
                name = f"app-{i:02d}"
                doc = sync.app_doc(name, round_name=round_name, revision=revision)
                doc["metadata"]["namespace"] = namespace
                if round_name != "create":
                    doc["metadata"]["resourceVersion"] = created[(namespace, name)]["metadata"][
                        "resourceVersion"
                    ]
                while True:
                    t0 = time.perf_counter()
                    try:
                        if round_name == "create":
                            got = api.create_namespaced_custom_object(
                                GROUP, VERSION, namespace, PLURAL, doc
                            )
                        else:
                            got = api.replace_namespaced_custom_object(
                                GROUP, VERSION, namespace, PLURAL, name, doc
                            )
                    except ApiException as err:
                        if err.status != 429:
                            raise
                        with lock:
                            throttled[f"raw {round_name}"] += 1
                        time.sleep(0.05)
                        continue
                    mine.append(time.perf_counter() - t0)
                    break
                with lock:
                    created[(namespace, name)] = copy.deepcopy(got)
            ends.append(time.perf_counter())
        except BaseException as err:
            errors.append(err)
        finally:
            with lock:
                durations.extend(mine)

    threads = [
        threading.Thread(target=one, args=(ns,), name=f"raw-{ns}", daemon=True) for ns in namespaces
    ]
    for thread in threads:
        thread.start()
    ready.wait()
    cpu0, busy0, begin = sync.cpu_snapshot(pids), host_busy(), time.perf_counter()
    for thread in threads:
        thread.join()
    cpu1, busy1 = sync.cpu_snapshot(pids), host_busy()
    if errors:
        raise RuntimeError(f"raw {round_name}: {errors[0]!r}") from errors[0]
    wall = max(ends) - begin
    rate = len(durations) / wall
    ms = [d * 1000 for d in durations]
    result = sync.Result(
        label=f"raw {round_name}",
        changes=len(namespaces) * apps,
        applied=len(durations),
        throughput=rate,
        p50=sync.percentile(ms, 0.50),
        p99=sync.percentile(ms, 0.99),
        worst=max(ms),
        write_rate=rate,
        call_p50=sync.percentile(ms, 0.50),
        cpu={name: cpu1[name] - cpu0[name] for name in cpu0},
        wall=wall,
    )
    add_other(result, busy1 - busy0)
    return result


# ----------------------------------------------------------------------------- Mooring runs
async def fleet_rounds(
    tmp: Path,
    children: list[running.Child],
    *,
    tag: str,
    pki_dir: Path,
    port: int,
    metrics_port: int,
    store: str,
    prefix: str,
    agents: int,
    apps: int,
    writers: int,
    pids: dict[str, int],
    apiserver: kubeapi.KubeAPIServer | None,
    requests: dict[str, dict[str, float]],
) -> tuple[list[sync.Result], float]:
    """A fleet of `agents` agents PREFIX-000... on the principal at `port`, then the create
    and update rounds written through hub store `store`; ([create, update], connect s)."""
    fleet = await sync.start_fleet(
        tmp,
        pki_dir=pki_dir,
        port=port,
        agents=agents,
        prefix=prefix,
        state_dir=tmp / f"fleet-{tag}",
        log=f"fleet-{tag}.log",
    )
    children.append(fleet)
    ready = await fleet.line(within=90)
    desired = principal.open_hub_store(store, timeout=10.0)
    await desired.connect()
    names = [f"{prefix}-{i:03d}" for i in range(agents)]
    results = []
    try:
        for round_name, revision in (("create", "v1"), ("update", "v2")):
            before = await asyncio.to_thread(api_metrics, apiserver) if apiserver else {}
            busy = host_busy()
            result = await sync.run_round(
                desired,
                fleet,
                round_name=round_name,
                agents=names,
                apps=apps,
                revision=revision,
                pids={**pids, "fleet": fleet.pid},
                metrics_port=metrics_port,
                label=f"{tag} {round_name}",
                writers=writers,
            )
            add_other(result, host_busy() - busy)
            if result.applied < result.changes:
                raise RuntimeError(
                    f"{result.label}: only {result.applied} of {result.changes} changes "
                    "reached the agents within the round's timeout"
                )
            if apiserver is not None:
                after = await asyncio.to_thread(api_metrics, apiserver)
                requests[result.label] = requests_by_verb(api_delta(before, after))
            results.append(result)
    finally:
        await desired.close()
    await sync.stop_fleet(fleet)
    return results, float(ready["connect_seconds"])


# ----------------------------------------------------------------------------- report
def report(
    args: argparse.Namespace,
    *,
    kube: list[sync.Result],
    etcd: list[sync.Result],
    raw: list[sync.Result],
    solo: list[sync.Result],
    connect: dict[str, float],
    requests: dict[str, dict[str, float]],
    whole: dict[tuple[str, ...], float],
    throttled: collections.Counter[str],
    versions: str,
    took: float,
) -> None:
    changes = args.agents * args.apps
    print(
        f"Mooring sync, hub store on Kubernetes: {args.agents} agents x {args.apps} "
        f"Applications (managed) through ONE principal, mTLS; {os.cpu_count()} CPUs"
    )
    print(
        f"{versions}; fleet connected and resynced in {connect['kube']:.2f}s (kube), "
        f"{connect['etcd']:.2f}s (etcd), solo {connect['solo']:.2f}s"
    )
    print("raw rows: thr/s = write/s, p50/p99/max = one API call (no agent)")
    print()
    sync.print_results([*kube, *etcd, *raw, *solo])
    print()
    print(f"{'ratio thr/s':<17}{'kube/raw':>10}{'kube/etcd':>11}{'etcd/raw':>10}")
    for k, e, r in zip(kube, etcd, raw, strict=True):
        round_name = k.label.split()[-1]
        print(
            f"{round_name:<17}{k.throughput / r.throughput:>9.3f}x"
            f"{k.throughput / e.throughput:>10.3f}x{e.throughput / r.throughput:>9.3f}x"
        )
    print()
    print(
        f"one agent alone (1 x {args.solo_apps} through the Kubernetes hub store, "
        f"{args.solo_writers} writer tasks):"
    )
    for r in solo:
        print(
            f"  {r.label:<14}{r.throughput:>7.0f} events/s = {r.throughput / UPSTREAM_PER_AGENT:.1f}x"
            f" upstream's ~{UPSTREAM_PER_AGENT:.0f}/s (#1051), "
            f"{r.throughput / TARGET_PER_AGENT:.2f}x our >= {TARGET_PER_AGENT:.0f}/s target; "
            f"writer {r.write_rate:.0f} calls/s"
        )
    print()
    rows = [*kube, *etcd, *raw, *solo]
    sync.print_cpu(rows)
    other = sum(r.cpu["other"] for r in rows) / sum(r.wall for r in rows)
    if other > 0.2:
        print(
            f"warning: processes outside this bench kept {other:.1f} of {os.cpu_count()} CPUs "
            "busy on average during the runs ('other'): every figure above is skewed"
        )
    print()
    print("apiserver requests during each run (watches left out): per change, per second")
    rates = {r.label: r.throughput for r in [*kube, *raw, *solo]}
    for label, verbs in requests.items():
        size = changes if not label.startswith(SOLO) else args.solo_apps
        per_change = sum(verbs.values()) / size
        parts = ", ".join(f"{verb} {n / size:.2f}" for verb, n in sorted(verbs.items()))
        print(f"  {label:<14}{per_change:>6.2f}{per_change * rates[label]:>7.0f}/s  ({parts})")
    rejected = {k: v for k, v in whole.items() if k[0] == "rejected"}
    too_many = sum(v for k, v in whole.items() if k[0] != "rejected" and k[2] == "429")
    where = ", ".join(f"{k[1]}/{k[2]} {v:.0f}" for k, v in sorted(rejected.items()))
    print(
        f"apiserver over the Kubernetes runs: {too_many:.0f} answers HTTP 429, "
        f"{sum(rejected.values()):.0f} rejected by priority-and-fairness ({where or 'none'}); "
        f"raw writes retried after 429: {sum(throttled.values())}"
    )
    print()
    sync.print_events([*kube, *etcd, *solo])
    print()
    print(f"bench took {took:.0f} s")


# ----------------------------------------------------------------------------- main
async def bench(args: argparse.Namespace, tmp: Path, children: list[running.Child]) -> None:
    started = time.monotonic()
    apiserver = apiserver_for(tmp / "kube")
    etcd: services.EtcdCluster | None = None
    try:
        await start_in_thread(apiserver.start)
        rejected_before = await asyncio.to_thread(api_metrics, apiserver)
        await asyncio.to_thread(apiserver.create_namespace, LEASES)
        kube_pids = {
            "apiserver": apiserver.proc.pid,  # type: ignore[union-attr]
            "kube-etcd": apiserver.etcd.members[0].proc.pid,  # type: ignore[union-attr]
        }

        pki_dir = tmp / "pki"
        pki.init_ca(pki_dir)
        principal_tls = pki.issue_principal(pki_dir, name="p1", sans=["localhost", "127.0.0.1"])
        for i in range(args.agents):
            pki.issue_agent(pki_dir, name=f"{sync.PREFIX}-{i:03d}")
        pki.issue_agent(pki_dir, name=f"{SOLO}-000")

        store = (
            f"kubernetes://?kubeconfig={apiserver.kubeconfig}&hub={HUB}"
            f"&namespace-prefix={HUB_PREFIX}"
        )
        requests: dict[str, dict[str, float]] = {}
        connect: dict[str, float] = {}

        # 1. the hub store on Kubernetes: the fleet, then one agent alone
        server, port, metrics_port = await sync.start_principal(
            tmp,
            tls_dir=principal_tls,
            coordination="kubernetes",
            namespace=LEASES,
            store=store,
            env={"KUBECONFIG": str(apiserver.kubeconfig)},
            log="principal-kube.log",
        )
        children.append(server)
        pids = {**kube_pids, "principal": server.pid}
        common = {"pki_dir": pki_dir, "port": port, "metrics_port": metrics_port}
        kube, connect["kube"] = await fleet_rounds(
            tmp,
            children,
            tag="kube",
            **common,
            store=store,
            prefix=sync.PREFIX,
            agents=args.agents,
            apps=args.apps,
            writers=1,
            pids=pids,
            apiserver=apiserver,
            requests=requests,
        )
        solo, connect["solo"] = await fleet_rounds(
            tmp,
            children,
            tag=SOLO,
            **common,
            store=store,
            prefix=SOLO,
            agents=1,
            apps=args.solo_apps,
            writers=args.solo_writers,
            pids=pids,
            apiserver=apiserver,
            requests=requests,
        )
        await server.stop()

        # 2. the limit: the same writes straight to the apiserver, nothing else running
        namespaces = [f"{RAW}-{i:03d}" for i in range(args.agents)]
        for namespace in namespaces:
            await asyncio.to_thread(apiserver.create_namespace, namespace)
        client = raw_client(apiserver.kubeconfig, pool=len(namespaces))
        api = kubernetes.client.CustomObjectsApi(client)
        created: dict[tuple[str, str], dict[str, Any]] = {}
        throttled: collections.Counter[str] = collections.Counter()
        raw = []
        try:
            for round_name, revision in (("create", "v1"), ("update", "v2")):
                before = await asyncio.to_thread(api_metrics, apiserver)
                result = await asyncio.to_thread(
                    raw_round,
                    api,
                    round_name=round_name,
                    namespaces=namespaces,
                    apps=args.apps,
                    revision=revision,
                    created=created,
                    pids=kube_pids,
                    throttled=throttled,
                )
                after = await asyncio.to_thread(api_metrics, apiserver)
                requests[result.label] = requests_by_verb(api_delta(before, after))
                raw.append(result)
        finally:
            await asyncio.to_thread(client.close)
        whole = api_delta(rejected_before, await asyncio.to_thread(api_metrics, apiserver))

        # 3. the hub store on etcd, same fleet and writer code
        etcd = services.EtcdCluster(tmp / "etcd", binary=str(testbed.binary("etcd")))
        await start_in_thread(etcd.start)
        server, port, metrics_port = await sync.start_principal(
            tmp, tls_dir=principal_tls, coordination=etcd.url, log="principal-etcd.log"
        )
        children.append(server)
        etcd_results, connect["etcd"] = await fleet_rounds(
            tmp,
            children,
            tag="etcd",
            pki_dir=pki_dir,
            port=port,
            metrics_port=metrics_port,
            store=etcd.url,
            prefix=sync.PREFIX,
            agents=args.agents,
            apps=args.apps,
            writers=1,
            pids={"principal": server.pid, "etcd": etcd.members[0].proc.pid},  # type: ignore[union-attr]
            apiserver=None,
            requests=requests,
        )
        await server.stop()

        report(
            args,
            kube=kube,
            etcd=etcd_results,
            raw=raw,
            solo=solo,
            connect=connect,
            requests=requests,
            whole=whole,
            throttled=throttled,
            versions=f"test bed {testbed.directory().name}",
            took=time.monotonic() - started,
        )
    finally:
        for child in children:  # before the stores, so nobody logs a vanished store
            child.kill()
        if etcd is not None:
            await asyncio.to_thread(etcd.stop)
        await asyncio.to_thread(apiserver.stop)


def print_log_tails(tmp: Path) -> None:
    """On failure: the tails of this bench's logs and of the apiserver's (kube/)."""
    running.print_log_tails(tmp)
    running.print_log_tails(tmp / "kube", lines=10, shown="kube/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--apps", type=int, default=50, help="Applications per agent")
    parser.add_argument("--solo-apps", type=int, default=200, help="Applications of the lone agent")
    parser.add_argument(
        "--solo-writers", type=int, default=20, help="writer tasks for the lone agent"
    )
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run")
    args = parser.parse_args()
    return running.run(
        functools.partial(bench, args),
        prefix="mooring-bench-kube-sync-",
        budget=args.budget,
        tails=print_log_tails,
    )


if __name__ == "__main__":
    sys.exit(main())
