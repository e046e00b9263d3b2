"""Binding a replica's ports: HOST:PORT checked before gRPC binds it, and one clear line
(which address, what for, and why) when it cannot be."""

from __future__ import annotations

import socket

import grpc

from principal import _settings as settings_

__all__ = ["add_port", "cannot_listen", "check_bindable", "listen"]


def cannot_listen(address: str, purpose: str, err: BaseException | None = None) -> OSError:
    """The one line for an address we cannot bind: which one, what for, and why."""
    reason = "the address is in use or not available"
    if isinstance(err, OSError):
        reason = (err.strerror or str(err)).lower()
    return OSError(f"cannot listen on {address} for {purpose}: {reason}")


def check_bindable(host: str, port: int, *, address: str, purpose: str) -> None:
    """Bind HOST:PORT once ourselves before gRPC does, so that a port in use (or an address
    this host lacks) is reported with its reason: gRPC says only "Failed to bind", after
    C-core has logged a line of its own. Like gRPC, one of HOST's addresses binding is enough."""
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as err:
        raise cannot_listen(address, purpose, err) from err
    failure: OSError | None = None
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                sock.bind(sockaddr)
            except OSError as err:
                failure = err
                continue
        return
    raise cannot_listen(address, purpose, failure) from failure


def add_port(
    server: grpc.aio.Server,
    host: str,
    port: int,
    *,
    address: str,
    purpose: str,
    creds: grpc.ServerCredentials | None = None,
) -> int:
    """Add HOST:PORT to `server` (TLS with `creds`, else plaintext); the port bound."""
    check_bindable(host, port, address=address, purpose=purpose)
    target = f"{host}:{port}"
    try:  # after the check, only a process binding in between gets here
        bound: int = (
            server.add_secure_port(target, creds)
            if creds is not None
            else server.add_insecure_port(target)
        )
    except RuntimeError as err:  # grpcio raises "Failed to bind" (old releases returned 0)
        raise cannot_listen(address, purpose) from err
    if bound == 0:
        raise cannot_listen(address, purpose)
    return bound


def listen(
    server: grpc.aio.Server,
    address: str,
    *,
    flag: str,
    purpose: str,
    creds: grpc.ServerCredentials | None = None,
) -> tuple[str, int]:
    """Add ADDRESS (the HOST:PORT value of `flag`) to `server`: the host and the port bound."""
    host, port = settings_.parse_hostport(address, what=flag)
    return host, add_port(server, host, port, address=address, purpose=purpose, creds=creds)
