"""How the etcd adapter dials the members a URL names: the gRPC target, the channel's
options and TLS credentials, and the name certificates are checked against.

aetcd builds its gRPC target as f"{host}:{port}". Several members become one `ipv4:`
target listing every address (names resolved here), so gRPC itself skips a dead member
(round-robin over the ready ones). A password sent in the clear to another machine is
warned of, once per endpoints and user in a process.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from election import _etcdurl as etcdurl

__all__ = ["Dial", "dial", "ipv4_addresses", "loopback", "server_name"]

logger = logging.getLogger("election._etcd")  # the adapter's logger, as operators filter it

CHANNEL_OPTIONS: Mapping[str, Any] = {
    "grpc.lb_policy_name": "round_robin",
    "grpc.keepalive_time_ms": 5_000,
    "grpc.keepalive_timeout_ms": 2_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1_000,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Dial:
    """What the etcd client is built with."""

    host: str  # aetcd's "host": a host name or address, or an `ipv4:A:P,...,A` target
    port: int
    options: Mapping[str, Any]  # gRPC channel options
    credentials: grpc.ChannelCredentials | None  # None: a plaintext channel


def dial(
    endpoints: Sequence[str], *, url: etcdurl.EtcdURL, credentials: etcdurl.Credentials
) -> Dial:
    """How to reach `endpoints` (HOST:PORT, at least one) as `url` says; ValueError when a
    member's name does not resolve."""
    if len(endpoints) > 1:
        addresses = ipv4_addresses(endpoints)
        head, _, last_port = ",".join(addresses).rpartition(":")
        host = f"ipv4:{head}"
    else:
        host, _, last_port = endpoints[0].rpartition(":")
    options = dict(CHANNEL_OPTIONS)
    channel: grpc.ChannelCredentials | None = None
    if url.tls:
        channel = grpc.ssl_channel_credentials(
            root_certificates=credentials.ca,
            private_key=credentials.key,
            certificate_chain=credentials.cert,
        )
        # An `ipv4:` target has no host name to check certificates against: gRPC
        # checks one name for every member, the first endpoint's unless told.
        if url.server_name or len(endpoints) > 1:
            options["grpc.ssl_target_name_override"] = server_name(url, endpoints)
    elif url.user is not None and not loopback(endpoints):
        said = (",".join(endpoints), url.user)
        if said not in _WARNED_PLAINTEXT:  # once per process, not at every open
            _WARNED_PLAINTEXT.add(said)
            logger.warning(
                "etcd %s: the password of user %s travels unencrypted: use etcds://", *said
            )
    return Dial(host=host, port=int(last_port), options=options, credentials=channel)


def server_name(url: etcdurl.EtcdURL, endpoints: Sequence[str]) -> str:
    """The name the members' certificates must carry: `server-name=`, else the first
    endpoint's host."""
    return url.server_name or endpoints[0].rpartition(":")[0].strip("[]")


def ipv4_addresses(endpoints: Sequence[str]) -> list[str]:
    """HOST:PORT endpoints as IPv4 ADDRESS:PORT, resolving names; ValueError if one fails."""
    out: list[str] = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        try:
            infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
        except OSError as err:
            raise ValueError(f"cannot resolve etcd endpoint {endpoint!r}: {err}") from err
        out.extend(f"{info[4][0]}:{port}" for info in infos)
    return list(dict.fromkeys(out))


_WARNED_PLAINTEXT: set[tuple[str, str]] = set()
"""(endpoints, user) already warned of sending a password in the clear."""


def loopback(endpoints: Sequence[str]) -> bool:
    """Whether every HOST:PORT is on this machine's loopback (a password sent there in
    the clear crosses no network)."""
    for endpoint in endpoints:
        host = endpoint.rpartition(":")[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True
