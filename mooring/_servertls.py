"""The TLS identity a local backing service (etcd, Redis) serves its clients with."""

from __future__ import annotations

import dataclasses
from pathlib import Path

__all__ = ["ServerTLS"]


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """A backing service's TLS identity (PEM files): clients must then speak TLS to it."""

    cert: Path  # the server's certificate; it must name the address clients dial (IP SAN)
    key: Path  # its private key
    ca: Path  # the CA that issued `cert`: what clients verify the server with
    client_ca: Path | None = None  # require a client certificate issued by this CA
