"""A Mooring process takes the open-files limit the operator allows, not systemd's 1024."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import resource; from proto import limits;"
    " print(*limits.raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))"
)


def _run(soft: int) -> list[int]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def start_low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        preexec_fn=start_low,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return [int(x) for x in out.stdout.split()]


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to raise to")
    before, after, soft_now, hard_now = _run(256)
    assert (before, after, soft_now, hard_now) == (256, hard, hard, hard)


def test_a_soft_limit_already_at_the_hard_one_is_left_alone() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no finite hard limit")
    assert _run(hard) == [hard, hard, hard, hard]


FRAGMENTED = """
import sys
from proto import limits

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

blobs = [bytes(4000) for _ in range(60000)]  # malloc'd (not pymalloc), ~240 MB
kept = blobs[::16]  # every 16th stays: the freed ones are holes, not the heap's top
del blobs
before = rss_mb()
released = limits.release_free_memory()
print(before, rss_mb(), released)
"""


def test_freed_heap_goes_back_to_the_system() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True, cwd=ROOT
    )
    before, after, released = out.stdout.split()
    if released != "True":
        pytest.skip("this C library has no malloc_trim")
    assert int(before) > 200  # glibc kept the holes
    assert int(after) < int(before) / 2, out.stdout


MAPPED = """
import sys
from proto import limits

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

mapped = limits.map_large_allocations() if sys.argv[1] == "mapped" else False
blobs = [b"x" * 17_000 for _ in range(8000)]  # a TLS handshaker's buffers' size, ~136 MB
kept = blobs[::16]  # every 16th stays, as above
del blobs
print(rss_mb(), mapped)
"""


def _rss_after_freeing(mode: str) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", MAPPED, mode], capture_output=True, text=True, check=True, cwd=ROOT
    )
    rss, mapped = out.stdout.split()
    return int(rss), mapped


def test_freed_large_allocations_leave_at_once_when_mapped() -> None:
    heap_rss, _ = _rss_after_freeing("heap")
    mapped_rss, mapped = _rss_after_freeing("mapped")
    if mapped != "True":
        pytest.skip("this C library has no mallopt")
    assert heap_rss > mapped_rss + 80, (heap_rss, mapped_rss)  # the heap kept the holes
