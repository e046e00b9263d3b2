"""The agent's periodic check that its local store answers: what its readiness says."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["StoreCheck"]

STORE_CHECK_SECONDS = 5.0
"""How often the agent checks that its local store answers (readiness)."""


class StoreCheck:
    """`run()` asks `probe()` every STORE_CHECK_SECONDS (each time within that long) and
    rests in `sleep`; `status()` says what the last answer was."""

    def __init__(
        self, probe: Callable[[], Awaitable[object]], *, sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self._probe = probe
        self._sleep = sleep
        self._error: str | None = None
        self._checked = False

    def status(self) -> tuple[bool, str]:
        """(the store answers, how it stands in words)."""
        if self._error is not None:
            return False, f"local store not answering: {self._error}"
        if not self._checked:
            return False, "local store not checked yet"
        return True, "local store ok"

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(STORE_CHECK_SECONDS):
                    await self._probe()
                self._error = None
            except Exception as err:  # any failure means "not answering"; said in the reason
                self._error = str(err).splitlines()[0] if str(err) else type(err).__name__
            self._checked = True
            await self._sleep(STORE_CHECK_SECONDS)
