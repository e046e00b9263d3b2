"""This replica's copy of the hub's certificate revocation list, and what it stops.

Every replica follows the list in the hub store (`HubStore.watch_revocations`: an etcd
watch, or a read every second on Kubernetes) and keeps it in memory, so a hello costs
two set lookups. A certificate is revoked when its serial or its SHA-256 fingerprint
is an entry's (`hub.Revocation`). Its hello is refused (`revoked`), and when the list
gains an entry, the open sessions of certificates it names are closed at once (the agent
redials and is refused), so a revoked session ends within about a second of the
`mooring pki revoke` on etcd, two on Kubernetes.

When the watch breaks, the last list read stays in force (a store outage neither
admits a revoked certificate nor refuses every agent) and the watch is opened again.
A replica serves no agent before it has read the list once (`wait_ready`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from principal import _hub as hub
from principal import _session as session_
from proto import credentials, logfields, pb

__all__ = ["RETRY", "Revocations"]

logger = logging.getLogger(__name__)

RETRY = 1.0  # seconds before a broken watch of the list is opened again


class Revocations:
    """The revocation list in force on this replica; `run()` keeps it current."""

    def __init__(
        self,
        desired: hub.HubStore,
        *,
        sessions: session_.SessionManager | None = None,
        replica_id: str = "",
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        self.desired = desired
        self.sessions = sessions
        self.replica_id = replica_id
        self.on_store_error = on_store_error
        self.entries: list[hub.Revocation] = []
        self._serials: dict[str, hub.Revocation] = {}
        self._fingerprints: dict[str, hub.Revocation] = {}
        self._ready = asyncio.Event()

    async def wait_ready(self) -> None:
        """Return once the list has been read."""
        await self._ready.wait()

    def revoked(self, cert: credentials.CertificateId | None) -> hub.Revocation | None:
        """The entry that revokes `cert`, or None."""
        if cert is None:
            return None
        return self._fingerprints.get(cert.fingerprint) or self._serials.get(cert.serial)

    @staticmethod
    def refusal(entry: hub.Revocation, cert: credentials.CertificateId) -> str:
        """The one line a revoked certificate is refused (or closed) with."""
        said = f": {entry.reason}" if entry.reason else ""
        return f"certificate revoked (serial {cert.serial}, revoked {entry.revoked_at}){said}"

    def refused(self, cert: credentials.CertificateId | None) -> str | None:
        """Why a peer with `cert` may not open a session (None: it may). A certificate
        that cannot be read cannot be checked, so it is refused too (grpc always gives
        the verified peer's PEM)."""
        if cert is None:
            return "client certificate unreadable: it cannot be checked for revocation"
        entry = self.revoked(cert)
        return None if entry is None else self.refusal(entry, cert)

    def apply(self, entries: Sequence[hub.Revocation]) -> None:
        """Put `entries` in force and close the sessions they revoke."""
        self.entries = list(entries)
        self._serials = {e.serial: e for e in entries if e.serial}
        self._fingerprints = {e.fingerprint: e for e in entries if e.fingerprint}
        self._ready.set()
        if self.sessions is None or not entries:
            return
        for session in list(self.sessions.sessions.values()):
            self.close_if_revoked(session)

    def close_if_revoked(self, session: session_.Session) -> bool:
        """Close `session` if its certificate is revoked; whether it was."""
        entry = self.revoked(session.certificate)
        if entry is None or session.certificate is None or session.closed:
            return False
        reason = self.refusal(entry, session.certificate)
        logger.warning(
            "agent %s: closing session %s: %s",
            session.agent,
            session.session_id,
            reason,
            extra=logfields.of(
                agent=session.agent,
                replica=self.replica_id or None,
                session=session.session_id,
                reason="revoked",
            ),
        )
        session.close(
            session_.CloseReason.REVOKED,
            reason,
            final=pb.Envelope(goodbye=pb.Goodbye(reason="certificate revoked")),
        )
        return True

    async def run(self) -> None:
        """Follow the list until cancelled, opening the watch again when it breaks."""
        while True:
            try:
                async for entries in self.desired.watch_revocations():
                    self.apply(entries)
            except hub.StoreError as err:
                if self.on_store_error is not None:
                    self.on_store_error()
                logger.warning(
                    "revocation list watch broke, reading it again in %gs: %s",
                    RETRY,
                    err,
                    extra=logfields.of(replica=self.replica_id or None, reason="store"),
                )
            await asyncio.sleep(RETRY)
