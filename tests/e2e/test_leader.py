"""Leader election across three real `mooring principal serve` processes, coordinating on
one real etcd, or on Lease objects of the test bed's real kube-apiserver.

A sampler scrapes every replica's `mooring_leader` (computed at scrape time from the
replica's local renew deadline) at 20 Hz for the whole test. On those samples we check:

- once settled, exactly one replica reports 1;
- after the leader is SIGKILLed another replica reports 1 within the failover bound;
- after the new leader is SIGSTOPped past its lease and SIGCONTed, it never reports 1 again,
  including on a scrape that was queued while it was stopped and is answered at the very
  first instant it runs;
- at no instant do two replicas report 1 (I4).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from election import _settings as election_settings
from proto import catalog, exposition
from tests import _procs as procs
from tests._poll import wait_for
from tests._procs import mooring

pytestmark = pytest.mark.e2e

REPLICAS = ("p1", "p2", "p3")
LEASE_DURATION = 2.0
RENEW_DEADLINE = 1.5
RETRY_PERIOD = 0.25
REQUEST_TIMEOUT = 0.5
ELECTION = election_settings.ElectionSettings(
    lease_duration=LEASE_DURATION,
    renew_deadline=RENEW_DEADLINE,
    retry_period=RETRY_PERIOD,
    request_timeout=REQUEST_TIMEOUT,
)

SAMPLE_INTERVAL = 0.05  # 20 Hz per replica
SCRAPE_TIMEOUT = 0.25  # a stopped replica cannot answer: its sample is "unknown" (None)

# Failover bound after SIGKILL, from the elector's rules (election/_electing.py):
# - lease_duration + retry_period is the brief's figure: the follower takes over once the
#   lease has not changed for lease_duration, and it looks every (jittered) retry period;
# - but it counts lease_duration from the loop time it *saw* the last renewal, on its next
#   poll, up to one jittered retry period after the write (the kill comes at or after that
#   write). So one more poll of observation lag: lease_duration + 2 x POLL in the worst case;
# - the takeover is a get and a compare-and-swap on loopback etcd: milliseconds; allow 0.1 s.
# Scrape allowance: a sample is timed by the instant its answer arrived, and the first
# answer showing the new leader arrives at most one sampler interval plus one scrape
# (<= SCRAPE_TIMEOUT) after the takeover.
POLL = RETRY_PERIOD * election_settings.JITTER_FACTOR
SCRAPE_ALLOWANCE = SAMPLE_INTERVAL + SCRAPE_TIMEOUT
FAILOVER_BOUND = LEASE_DURATION + 2 * POLL + 0.1 + SCRAPE_ALLOWANCE  # 3.0 s here


@dataclasses.dataclass(frozen=True)
class Sample:
    start: float  # time.monotonic() when the scrape was sent
    end: float  # ... and when its answer arrived (or it failed)
    replica: str
    leader: float | None  # None: no answer (dead, stopped, timed out)


def scrape_leader(port: int, *, timeout: float) -> float | None:
    samples = exposition.scrape(f"127.0.0.1:{port}", timeout=timeout)
    return None if samples is None else samples.value(catalog.LEADER.name)


class Sampler:
    """One thread per replica (so a stopped replica does not slow the others), each scraping
    `mooring_leader` every SAMPLE_INTERVAL and recording every answer, or its absence."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(r,), name=f"sampler-{r}", daemon=True)
            for r in ports
        ]

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def probe(self, replica: str, *, timeout: float) -> Sample:
        start = time.monotonic()
        value = scrape_leader(self.ports[replica], timeout=timeout)
        sample = Sample(start, time.monotonic(), replica, value)
        with self._lock:
            self.samples.append(sample)
        return sample

    def _run(self, replica: str) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.probe(replica, timeout=SCRAPE_TIMEOUT)
            next_at = max(next_at + SAMPLE_INTERVAL, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def snapshot(self, *, since: float = float("-inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.start >= since]

    def leaders(self, *, since: float) -> set[str]:
        return {s.replica for s in self.snapshot(since=since) if s.leader == 1.0}

    def settled(self, *, window: float, alive: tuple[str, ...]) -> str | None:
        """The one leader when, over the last `window` seconds, every live replica answered
        at least 3 times, one of them always 1 and the others always 0; else None."""
        recent = self.snapshot(since=time.monotonic() - window)
        by_replica = {r: [s.leader for s in recent if s.replica == r] for r in alive}
        if any(len(values) < 3 or None in values for values in by_replica.values()):
            return None
        ones = [r for r, values in by_replica.items() if set(values) == {1.0}]
        zeros = [r for r, values in by_replica.items() if set(values) == {0.0}]
        return ones[0] if len(ones) == 1 and len(zeros) == len(alive) - 1 else None


def overlapping_leaders(samples: list[Sample]) -> list[tuple[Sample, Sample]]:
    """Pairs of samples from different replicas, both 1, whose [start, end] overlap.

    A sample of 1 means the replica led at some instant inside its interval. A successor
    starts at least lease_duration - renew_deadline (0.5 s here) after its predecessor's
    deadline, far more than a scrape lasts, so two such intervals overlapping means two
    replicas led at once.
    """
    ones = sorted((s for s in samples if s.leader == 1.0), key=lambda s: s.start)
    bad = []
    for i, a in enumerate(ones):
        for b in ones[i + 1 :]:
            if b.start > a.end:
                break
            if b.replica != a.replica:
                bad.append((a, b))
    return bad


class Replicas:
    def __init__(
        self,
        root: Path,
        *,
        coordination: str,
        namespace: str = "default",  # of the Leases, with coordination "kubernetes"
        store: str | None = None,
        store_root: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.pki = root / "pki"
        mooring("pki", "init", "--dir", str(self.pki))
        self.metrics = {r: procs.free_port() for r in REPLICAS}
        self.procs: dict[str, procs.Proc] = {}
        for replica in REPLICAS:
            mooring(
                "pki", "issue", "principal", "--dir", str(self.pki), "--name", replica,
                "--san", "localhost,127.0.0.1",
            )  # fmt: skip
            settings = procs.replica_settings(
                replica,
                coordination=coordination,
                namespace=namespace,
                store=store,
                tls_dir=self.pki / "principals" / replica,
                metrics=f"127.0.0.1:{self.metrics[replica]}",
                election=ELECTION,
                store_root=store_root,
            )
            self.procs[replica] = procs.replica(settings, log=root / f"{replica}.log", env=env)

    def start(self) -> None:
        for proc in self.procs.values():
            proc.start()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {r}\n{p.output()[-3000:]}" for r, p in self.procs.items())


@pytest.fixture(params=["etcd", "kubernetes"])
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, etcd, prefix: str
) -> Iterator[Replicas]:
    if request.param == "etcd":
        group = Replicas(tmp_path, coordination=etcd.url, store_root=f"{prefix}/")
    else:
        apiserver = request.getfixturevalue("kube_apiserver")
        namespace = f"leader{prefix.replace('/t-', '-')}"
        apiserver.create_namespace(namespace)
        group = Replicas(
            tmp_path,
            coordination="kubernetes",
            namespace=namespace,
            store=etcd.url,
            store_root=f"{prefix}/",
            env={"KUBECONFIG": str(apiserver.kubeconfig)},
        )
    group.start()
    try:
        yield group
    finally:
        group.stop()


def test_one_leader_fast_failover_and_a_resumed_leader_never_leads(replicas: Replicas) -> None:
    with Sampler(replicas.metrics) as sampler:
        try:
            run_scenario(replicas, sampler)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{replicas.logs()}") from None
        finally:
            samples = sampler.snapshot()
    overlaps = overlapping_leaders(samples)
    assert not overlaps, f"two replicas reported mooring_leader 1 at once: {overlaps[:3]}"


def run_scenario(replicas: Replicas, sampler: Sampler) -> None:
    alive = REPLICAS
    first = wait_for(
        lambda: sampler.settled(window=0.5, alive=alive),
        timeout=20,
        what="exactly one leader among 3 replicas",
    )

    # SIGKILL the leader: another replica leads within the bound.
    killed_at = time.monotonic()
    replicas.procs[first].kill(signal.SIGKILL)
    alive = tuple(r for r in alive if r != first)
    second = wait_for(
        lambda: next(iter(sampler.leaders(since=killed_at) - {first}), None),
        timeout=FAILOVER_BOUND + 5,
        what="a new leader after SIGKILL",
    )
    took_over = min(
        s.end for s in sampler.snapshot(since=killed_at) if s.replica == second and s.leader == 1
    )
    failover = took_over - killed_at
    assert failover <= FAILOVER_BOUND, f"failover took {failover:.2f}s > {FAILOVER_BOUND:.2f}s"
    print(f"\nfailover after SIGKILL of {first}: {second} leads after {failover:.2f}s")
    wait_for(
        lambda: sampler.settled(window=0.5, alive=alive) == second,
        timeout=5,
        what=f"{second} the one leader of {alive}",
    )

    # SIGSTOP the new leader until the third replica has taken over (which cannot happen
    # before lease_duration), then SIGCONT it.
    stopped = replicas.procs[second]
    stopped_at = time.monotonic()
    stopped.kill(signal.SIGSTOP)
    third = wait_for(
        lambda: next(iter(sampler.leaders(since=stopped_at) - {second}), None),
        timeout=FAILOVER_BOUND + 5,
        what="a new leader while the old one is stopped",
    )
    # A scrape queued while the replica is stopped: it is answered at the first instant
    # the process runs again, before its event loop has done anything.
    queued: list[Sample] = []
    prober = threading.Thread(target=lambda: queued.append(sampler.probe(second, timeout=5)))
    prober.start()
    wait_for(lambda: time.monotonic() - stopped_at > LEASE_DURATION, what="stopped > lease")
    resumed_at = time.monotonic()
    stopped.kill(signal.SIGCONT)
    prober.join(timeout=10)
    assert queued and queued[0].start < resumed_at <= queued[0].end, f"not queued: {queued}"
    assert queued[0].leader == 0.0, f"the scrape queued across SIGCONT reported {queued}"

    wait_for(
        lambda: len([s for s in sampler.snapshot(since=resumed_at) if s.replica == second]) >= 10,
        timeout=5,
        what=f"10 samples of the resumed {second}",
    )
    after = [s for s in sampler.snapshot(since=resumed_at - SCRAPE_TIMEOUT) if s.replica == second]
    answered = [s for s in after if s.end >= resumed_at and s.leader is not None]
    assert answered, f"{second} did not answer after SIGCONT"
    assert all(s.leader == 0.0 for s in answered), f"resumed ex-leader reported 1: {answered}"
    assert answered[0].end - resumed_at < 0.5, "no sample right after SIGCONT"
    assert wait_for(
        lambda: sampler.settled(window=0.5, alive=alive) == third,
        timeout=5,
        what=f"{third} the one leader after {second} resumed",
    )
    rates = {
        r: len([s for s in sampler.snapshot() if s.replica == r and s.start >= stopped_at])
        / (time.monotonic() - stopped_at)
        for r in alive
        if r != second
    }
    assert all(rate >= 10 for rate in rates.values()), f"sampling below 10 Hz: {rates}"
