"""The store harness the conformance suite runs on (shared by conftest and the tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from election import _stores as stores


class StoreHarness:
    """Opens stores of one kind over one shared backend, and can make that backend hang."""

    def __init__(
        self,
        kind: str,
        *,
        opener: Callable[[float], stores.FencedRecordStore],
        hang: Callable[[bool], None],
        timeout: float = 5.0,
    ) -> None:
        self.kind = kind
        self.timeout = timeout
        self.opened: list[stores.FencedRecordStore] = []
        self._opener = opener
        self._hang = hang

    def open(self, *, timeout: float | None = None) -> stores.FencedRecordStore:
        """A new client (its own connection) on the harness's backend."""
        store = self._opener(self.timeout if timeout is None else timeout)
        self.opened.append(store)
        return store

    @contextlib.contextmanager
    def hanging(self) -> Iterator[None]:
        """Every request to the backend stalls while inside."""
        self._hang(True)
        try:
            yield
        finally:
            self._hang(False)

    async def aclose(self) -> None:
        for store in self.opened:
            await store.close()
