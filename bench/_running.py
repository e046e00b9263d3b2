"""How an asyncio bench runs (bench_sync, bench_kube_sync): its child processes, each in
its own session, and `run`, which gives the bench a temp dir and a time budget and, on
any exit, prints the logs' tails if it failed, kills every child and removes the dir."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class Child:
    """One child process in its own session; stopped by its pid (group), never by name."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, *, within: float) -> dict[str, Any]:
        """The next JSON line on the child's stdout, waiting at most `within` seconds."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(within):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError(f"{self.name} exited (code {await self.proc.wait()}); see its log")
        return dict(json.loads(raw))

    async def send(self, payload: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self, *, grace: float = 10.0) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.kill()
            await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


async def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    pipes: bool = False,
    env: Mapping[str, str] | None = None,
) -> Child:
    """`python argv...` in its own session; `env` is added to this process's environment."""
    handle = log.open("ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else handle,
            stderr=handle,
            start_new_session=True,
        )
    finally:
        handle.close()
    return Child(name, proc)


def print_log_tails(folder: Path, *, lines: int = 15, shown: str = "") -> None:
    """On failure: the last `lines` lines of every log in `folder`, to stderr, each under
    `--- <shown><file name>`."""
    for log in sorted(folder.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        if tail:
            print(f"--- {shown}{log.name}\n" + "\n".join(tail), file=sys.stderr)


Bench = Callable[[Path, list[Child]], Awaitable[None]]
"""A bench: given its temp dir and the list it appends each child it starts to."""


async def _amain(bench: Bench, *, prefix: str, budget: float, tails: Callable[[Path], None]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    children: list[Child] = []
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with asyncio.timeout(budget):
            await bench(tmp, children)
        return 0
    except BaseException:
        tails(tmp)
        raise
    finally:
        for child in children:
            child.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.proc.wait(), 5)
        shutil.rmtree(tmp, ignore_errors=True)


def run(
    bench: Bench,
    *,
    prefix: str,
    budget: float,
    tails: Callable[[Path], None] = print_log_tails,
) -> int:
    """Run `bench` in a fresh temp dir named `prefix`... within `budget` seconds; the exit
    status: 0, 130 interrupted (SIGINT, SIGTERM), 1 out of time. On any failure
    `tails(tmp)` shows the logs first; whatever happens every child is killed and the
    dir removed."""
    try:
        return asyncio.run(_amain(bench, prefix=prefix, budget=budget, tails=tails))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"bench did not finish within {budget:.0f}s", file=sys.stderr)
        return 1
