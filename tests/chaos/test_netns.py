"""chaos.netns on real namespaces: reachability, partitions that drop (not refuse), one-way
loss, isolation, heal, destroy, stale cleanup, and a root namespace left untouched.

Servers and probes run inside the members through `Topology.argv`. Every wait polls a
condition with a deadline; an expected failure is a probe's own socket timeout.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import netns
from tests._poll import wait_for

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None,
        reason="needs root, iproute2 and iptables",
    ),
]

PREFIX = "mctn"  # this file's topology; "mctd", "mcts" for the throwaway ones
TCP_PORT = 7000
UDP_PORT = 7001
FAIL_TIMEOUT = 1.0  # seconds a probe waits before it calls a silence a timeout
ROOT = Path(__file__).resolve().parents[2]

# A member's server: TCP echo and a UDP receiver that prints each datagram it gets.
SERVER = textwrap.dedent(
    """
    import socket, sys, threading
    tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])
    def echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
    def udp():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", udp_port))
        while True:
            data, _ = sock.recvfrom(65536)
            print("udp", data.decode(), flush=True)
    threading.Thread(target=udp, daemon=True).start()
    server = socket.create_server(("0.0.0.0", tcp_port), reuse_port=False)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
    """
)

# A probe: `tcp HOST PORT TIMEOUT` prints ok | timeout | refused | error ...;
# `udp HOST PORT TEXT` sends one datagram; `hold HOST PORT TIMEOUT` connects, prints the
# first round trip's result, then one more round trip per line read from stdin.
PROBE = textwrap.dedent(
    """
    import socket, sys
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def roundtrip(sock):
        try:
            sock.sendall(b"ping")
            return "ok" if sock.recv(4) == b"ping" else "error short read"
        except TimeoutError:
            return "timeout"
        except OSError as err:
            return f"error {err!r}"
    if mode == "udp":
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[4].encode(), (host, port))
        print("sent", flush=True)
        sys.exit()
    try:
        sock = socket.create_connection((host, port), timeout=float(sys.argv[4]))
    except TimeoutError:
        print("timeout", flush=True); sys.exit()
    except ConnectionRefusedError:
        print("refused", flush=True); sys.exit()
    except OSError as err:
        print(f"error {err!r}", flush=True); sys.exit()
    print(roundtrip(sock), flush=True)
    if mode == "hold":
        for _ in sys.stdin:
            print(roundtrip(sock), flush=True)
    """
)


def run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def root_state() -> dict[str, str]:
    """What the root namespace must look like after the tests as before them.

    iptables-save's "# Generated/Completed on <time>" lines are the only ones dropped.
    """
    state = {}
    for cmd in ("iptables-save", "ip6tables-save", "iptables-legacy-save"):
        if shutil.which(cmd):
            out = run([cmd])
            state[cmd] = "".join(
                line for line in out.splitlines(keepends=True) if not line.startswith("#")
            )
    state["links"] = run(["ip", "-o", "link", "show"])
    state["addresses"] = run(["ip", "-o", "addr", "show"])
    state["routes"] = run(["ip", "route", "show", "table", "all"])
    return state


class Member:
    """A member's server process and the UDP datagrams it has received."""

    def __init__(self, topo: netns.Topology, name: str) -> None:
        self.proc = subprocess.Popen(
            topo.argv(name, [sys.executable, "-c", SERVER, str(TCP_PORT), str(UDP_PORT)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: "ready" in self.lines, what=f"{name}'s server")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def received(self, text: str) -> bool:
        return f"udp {text}" in self.lines

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def tcp(topo: netns.Topology, src: str, dst: str, *, port: int = TCP_PORT, host: str = "") -> str:
    """One connect + round trip from src to dst's echo server: ok, timeout, refused, ..."""
    target = host or topo.address(dst)
    argv = [sys.executable, "-c", PROBE, "tcp", target, str(port), str(FAIL_TIMEOUT)]
    return run(topo.argv(src, argv)).strip()


def udp(topo: netns.Topology, src: str, dst: str, text: str) -> None:
    argv = [sys.executable, "-c", PROBE, "udp", topo.address(dst), str(UDP_PORT), text]
    assert run(topo.argv(src, argv)).strip() == "sent"


def ruleset(topo: netns.Topology, name: str, *, counters: bool = False) -> str:
    out = run(topo.argv(name, ["iptables-save", *(["-c"] if counters else [])]))
    return "".join(line for line in out.splitlines(keepends=True) if not line.startswith("#"))


@pytest.fixture(scope="module")
def root_before() -> dict[str, str]:
    return root_state()


@pytest.fixture(scope="module")
def topo(root_before: dict[str, str]) -> Iterator[netns.Topology]:
    with netns.Topology.create(PREFIX, ["a", "b", "c"]) as topology:
        yield topology


@pytest.fixture(scope="module")
def members(topo: netns.Topology) -> Iterator[dict[str, Member]]:
    started = {name: Member(topo, name) for name in topo.names}
    yield started
    for member in started.values():
        member.stop()


@pytest.fixture(autouse=True)
def healed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "topo" in request.fixturenames:
        request.getfixturevalue("topo").heal()


def test_members_reach_each_other(topo: netns.Topology, members: dict[str, Member]) -> None:
    addresses = {name: topo.address(name) for name in topo.names}
    assert len(set(addresses.values())) == 3
    assert all(ipaddress.ip_address(addr) in topo.subnet for addr in addresses.values())
    for src, dst in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "b")]:
        assert tcp(topo, src, dst) == "ok", (src, dst)
    assert tcp(topo, "a", "b", port=TCP_PORT + 10) == "refused"  # a closed port says so
    # The namespaces have IPv6 off and no route out of the subnet.
    assert run(topo.argv("a", ["ip", "-o", "-6", "addr", "show"])) == ""
    assert run(topo.argv("a", ["ip", "route", "show"])).split()[0] == str(topo.subnet)


def test_partition_drops_both_ways_and_heal_restores(
    topo: netns.Topology, members: dict[str, Member], root_before: dict[str, str]
) -> None:
    hold = subprocess.Popen(
        topo.argv(
            "a",
            [sys.executable, "-c", PROBE, "hold", topo.address("b"), str(TCP_PORT), "1.0"],
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert hold.stdin is not None and hold.stdout is not None
    try:
        assert hold.stdout.readline().strip() == "ok"  # established before the fault

        topo.partition("a", "b")
        topo.partition("a", "b")  # idempotent: no second copy of each rule
        assert len(topo.rules) == 2

        hold.stdin.write("again\n")
        hold.stdin.flush()
        assert hold.stdout.readline().strip() == "timeout"  # the open connection hangs
        assert tcp(topo, "a", "b") == "timeout"  # dropped, not refused
        assert tcp(topo, "b", "a") == "timeout"
        assert tcp(topo, "a", "b", port=TCP_PORT + 10) == "timeout"  # even a closed port
        assert tcp(topo, "a", "c") == "ok"  # other links are untouched
        assert tcp(topo, "c", "b") == "ok"
        assert root_state() == root_before  # the rules live in the members' namespaces

        topo.heal()
        assert topo.rules == []
        assert tcp(topo, "a", "b") == "ok"
        assert tcp(topo, "b", "a") == "ok"
    finally:
        hold.kill()
        hold.wait(timeout=10)
        hold.stdin.close()
        hold.stdout.close()


def test_another_process_attaches_to_fault_and_heal_all(
    topo: netns.Topology, members: dict[str, Member]
) -> None:
    """The chaos runner creates the topology; chaostoolkit's actions, in another process,
    attach to it from its description to add faults and to heal them."""
    first = netns.Topology.attach(topo.describe())
    first.partition("a", "b")
    assert tcp(topo, "a", "b") == "timeout"
    foreign = ("-s", topo.address("c"), "-p", "udp", "--dport", "9", "-j", "ACCEPT")
    run(topo.argv("b", ["iptables", "-w", "-I", "INPUT", *foreign]))
    try:
        # A second attach knows nothing of the first's rules, and removes them anyway.
        removed = netns.Topology.attach(topo.describe()).heal_all()
        assert sorted(ns for ns, _ in removed) == [topo.namespace("a"), topo.namespace("b")]
        assert tcp(topo, "a", "b") == "ok"
        assert "--dport 9 -j ACCEPT" in ruleset(topo, "b")  # not ours: left alone
    finally:
        run(topo.argv("b", ["iptables", "-w", "-D", "INPUT", *foreign]))


def test_drop_one_way_blocks_exactly_one_direction(
    topo: netns.Topology, members: dict[str, Member]
) -> None:
    topo.drop_one_way("a", "b")
    udp(topo, "a", "b", "lost-1")  # a -> b: dropped on arrival at b
    udp(topo, "b", "a", "back-1")  # b -> a: flows
    wait_for(lambda: members["a"].received("back-1"), what="b's datagram at a")

    def dropped() -> int:  # the packet counter of b's DROP rule for a's address
        for line in ruleset(topo, "b", counters=True).splitlines():
            if f"-s {topo.address('a')}/32" in line and "DROP" in line:
                return int(line[1:].split(":")[0])
        return 0

    wait_for(lambda: dropped() >= 1, what="a's datagram counted by b's DROP rule")

    topo.heal()
    udp(topo, "a", "b", "after-1")
    wait_for(lambda: members["b"].received("after-1"), what="a's datagram at b after heal")
    # The same path delivers in order: what was sent before "after-1" and is missing was lost.
    assert not members["b"].received("lost-1")


def test_isolate_leaves_only_loopback(topo: netns.Topology, members: dict[str, Member]) -> None:
    topo.isolate("a")
    assert tcp(topo, "a", "b") == "timeout"
    assert tcp(topo, "b", "a") == "timeout"
    assert tcp(topo, "c", "a") == "timeout"
    udp(topo, "a", "c", "from-isolated")
    assert tcp(topo, "b", "c") == "ok"  # the others still talk
    assert tcp(topo, "a", "a", host="127.0.0.1") == "ok"  # and a's own loopback works

    topo.heal()
    assert tcp(topo, "a", "b") == "ok"
    assert tcp(topo, "c", "a") == "ok"
    udp(topo, "a", "c", "after-isolation")
    wait_for(lambda: members["c"].received("after-isolation"), what="a's datagram at c")
    assert not members["c"].received("from-isolated")


def test_heal_removes_its_own_rules_and_nothing_else(topo: netns.Topology) -> None:
    foreign = ["-A", "OUTPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT"]
    run(topo.argv("b", ["iptables", "-w", *foreign]))  # some other tool's rule
    try:
        before = {name: ruleset(topo, name) for name in topo.names}
        topo.partition("a", "b")
        topo.drop_one_way("c", "b")
        topo.isolate("c")
        topo.isolate("c")
        assert all(ruleset(topo, n) != before[n] for n in topo.names)
        assert len(topo.rules) == 5  # isolate("c") repeats drop_one_way("c", "b")'s rule
        topo.heal()
        topo.heal()  # idempotent
        assert {name: ruleset(topo, name) for name in topo.names} == before
        assert "--dport 9 -j ACCEPT" in ruleset(topo, "b")
    finally:
        run(topo.argv("b", ["iptables", "-w", "-D", *foreign[1:]]))


def test_errors_name_the_command_and_its_stderr(topo: netns.Topology) -> None:
    with pytest.raises(netns.TopologyError) as caught:
        netns._run(["ip", "-n", topo.namespace("a"), "link", "set", "nosuchdev0", "up"])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"`ip -n {PREFIX}-a link set nosuchdev0 up` failed (exit 1): ")
    assert "nosuchdev0" in message.split("failed", 1)[1]
    with pytest.raises(KeyError):
        topo.address("nobody")
    with pytest.raises(netns.TopologyError, match="held by a live topology"):
        netns.Topology.cleanup_stale(PREFIX)
    with pytest.raises(netns.TopologyError, match="held by a live topology"):
        netns.Topology.create(PREFIX, ["x"])
    with pytest.raises(netns.TopologyError, match=r"overlaps networks in use: 127\.0\.0\.0/8"):
        netns.Topology.create("mctx", ["x"], subnet="127.1.0.0/24")  # lo's 127.0.0.1/8
    assert not any(ns.startswith("mctx-") for ns in run(["ip", "netns", "list"]).split())


def test_destroy_kills_processes_and_leaves_nothing() -> None:
    links_before = run(["ip", "-o", "link", "show"])
    topo = netns.Topology.create("mctd", ["p1", "fleet"])
    sleeper = subprocess.Popen(topo.argv("fleet", ["sleep", "600"]))
    namespaces = [topo.namespace(n) for n in ("p1", "fleet", "bridge")]
    listed = run(["ip", "netns", "list"])
    assert all(ns in listed for ns in namespaces)

    topo.destroy()
    assert sleeper.wait(timeout=10) == -9
    listed = run(["ip", "netns", "list"])
    assert not any(ns in listed for ns in namespaces)
    assert run(["ip", "-o", "link", "show"]) == links_before  # no veth end anywhere here
    topo.destroy()  # idempotent
    with pytest.raises(netns.TopologyError, match="destroyed"):
        topo.partition("p1", "fleet")


def test_cleanup_stale_removes_a_crashed_run() -> None:
    crash = textwrap.dedent(
        """
        import os, subprocess
        from chaos import netns
        topo = netns.Topology.create("mcts", ["x", "y"])
        sleeper = subprocess.Popen(
            topo.argv("x", ["sleep", "600"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        print(sleeper.pid, flush=True)
        os._exit(0)  # a crash: no destroy, no lock release but the kernel's
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", crash], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    sleeper = int(done.stdout.split()[0])
    assert {"mcts-x", "mcts-y", "mcts-bridge"} <= set(run(["ip", "netns", "list"]).split())

    removed = netns.Topology.cleanup_stale("mcts")
    assert sorted(removed) == ["mcts-bridge", "mcts-x", "mcts-y"]
    assert not any(ns.startswith("mcts-") for ns in run(["ip", "netns", "list"]).split())

    def gone() -> bool:  # reaped, or a zombie nobody reaps in this container
        try:
            return Path(f"/proc/{sleeper}/stat").read_text().split(") ")[1][0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, what="the crashed run's process to die")
    assert netns.Topology.cleanup_stale("mcts") == []


def test_root_namespace_untouched(topo: netns.Topology, root_before: dict[str, str]) -> None:
    topo.destroy()
    assert not any(ns.startswith(f"{PREFIX}-") for ns in run(["ip", "netns", "list"]).split())
    assert root_state() == root_before
