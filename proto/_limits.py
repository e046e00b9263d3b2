"""Process limits a long-running Mooring process sets for itself at start."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import resource
from collections.abc import Callable

__all__ = [
    "MMAP_THRESHOLD_BYTES",
    "TRIM_SECONDS",
    "map_large_allocations",
    "raise_open_files_limit",
    "release_free_memory",
    "trim_periodically",
]

TRIM_SECONDS = 10.0
"""How often a replica hands freed heap back to the system."""
MMAP_THRESHOLD_BYTES = 16 * 1024
"""Allocations of at least this many bytes get a mapping of their own, unmapped when freed
(glibc's default: 128 KB, raised as large blocks are freed). Below a TLS handshaker's 17
KB buffers, above the 8 KB read buffer every connection holds."""
_M_MMAP_THRESHOLD = -3
"""mallopt's parameter number for M_MMAP_THRESHOLD (glibc's malloc.h)."""

logger = logging.getLogger(__name__)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one; (before, after).

    Every agent session, every connection in a flood and every store connection is a
    descriptor. With systemd's default soft limit of 1024 a replica stops accepting at
    about a thousand: bench_hardening with --replica-nofile 1024 measured every new
    agent's dial timing out and a recovery p50 of 41 s. The hard limit is what the
    operator allows; the soft one is only a default, so a server takes all it may (as
    Go's runtime does since 1.19).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as err:
        logger.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, err)
        return soft, soft
    logger.info("open files limit raised from %d to %d (the hard limit)", soft, hard)
    return soft, hard


def _libc_functions(*names: str) -> list[Callable[..., int] | None]:
    """glibc's malloc functions `names`, each None on a C library without it (musl).
    The library is looked up once: find_library runs `ldconfig -p`, a process."""
    library = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(library) if library is not None else None
    except OSError:
        libc = None
    return [getattr(libc, name, None) for name in names]


_TRIM, _MALLOPT = _libc_functions("malloc_trim", "mallopt")


def map_large_allocations(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve allocations of `threshold` bytes and more from mappings of their own
    (mallopt M_MMAP_THRESHOLD); False when the C library cannot.

    Every connection the agent port accepts gets a TLS handshaker whose BIO pair holds
    two 17 KB buffers (BoringSSL's default size; gRPC passes none), mostly never written
    by a connection that sends nothing, so mostly not resident. On the heap, those freed
    by the handshake timeout are reused by other allocations that do write them: an
    attacker who reopens what was closed cost twice what it held (bench_hardening:
    31.3 KB per held connection, 59.0 KB at the peak after the reopening). A mapping of
    its own is unmapped when freed: 26.5 and 29.9 KB. The cost is two mmap/munmap pairs
    per connection (bench_sync: about 210 more mmaps over a run of 100 agents and 2,000
    changes; bench_memory: 106 KB per open session, 109 without).
    """
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, threshold))


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system; False when the C library cannot.

    glibc keeps what it freed for reuse, so a replica's RSS stays at the high-water mark
    of a connection flood long after (bench_hardening: 229 MB 30 s after a flood, from
    71 MB before; 2,000 pending TLS handshakes, then closed). malloc_trim(0) returns it:
    measured on grpc.aio with 2,000 connections closed, RSS 156 -> 80 MB (64 at start)
    in 20 ms.
    """
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def trim_periodically(interval: float = TRIM_SECONDS) -> None:
    """release_free_memory() every `interval` seconds, on a worker thread (it walks the
    heap: tens of ms after a flood), until cancelled."""
    if _TRIM is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(release_free_memory)
