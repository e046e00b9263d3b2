"""What a failure of etcd, gRPC or the etcd client is to a caller: an `election._errors`
error, in one line.

Failures of the secured parts (a CA that does not match, a client certificate the server
wants or refuses, a wrong password, a missing role) are explained in one line naming
etcd and its endpoints (`SECURITY`), never as gRPC's raw text. A token etcd refuses
(`TOKEN_REJECTED`) is for the adapter to renew, not an error yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from election import _errors as errors
from election import _etcdclient as etcdclient
from election import _etcddial as etcddial
from election import _etcdurl as etcdurl

__all__ = ["SECURITY", "TOKEN_REJECTED", "detail", "explained", "mapped", "token_rejected"]


TOKEN_REJECTED = ("invalid auth token", "auth store is old")
"""etcd refused a token it issued (lapsed, lost in a restart, older than a change of
users or roles): take a new one and try again."""

# What etcd or gRPC says when a secured etcd refuses us (a fragment of the detail) ->
# what the operator reads after "etcd ENDPOINTS: ". {ca}, {cert}, {user}, {name} come
# from the URL. First match wins.
SECURITY: tuple[tuple[str, str], ...] = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        "TLS: the server's certificate is not signed by {ca} (ca=, --etcd-ca)",
    ),
    (
        "Hostname Verification Check failed",
        "TLS: the server's certificate does not name {name} (server-name=,"
        " --etcd-server-name, checks another name it carries)",
    ),
    ("TSI_DATA_CORRUPTED", "TLS: the server closed the connection: {client_cert}"),
    ("CERTIFICATE_REQUIRED", "TLS: the server closed the connection: {client_cert}"),
    (
        "Handshake read failed",
        "TLS: the server did not answer the TLS handshake (if it serves plaintext, use etcd://)",
    ),
    (
        "WRONG_VERSION_NUMBER",
        "TLS: the server did not answer the TLS handshake (if it serves plaintext, use etcd://)",
    ),
    (
        "invalid user ID or password",
        "authentication failed for user {user}: wrong user name or password",
    ),
    (
        "user name is empty",
        "the server requires authentication: give user=NAME (--etcd-user) and its password"
        f" (--etcd-password-file FILE or {etcdurl.PASSWORD_ENV})",
    ),
    (
        "permission denied",
        "permission denied for user {user}: its roles must grant readwrite on Mooring's key"
        " prefix (--store-root, default /mooring/)",
    ),
)


def detail(err: BaseException) -> str:
    """The server's (or gRPC's) own words: an RPC error's details, else the message."""
    if isinstance(err, grpc.aio.AioRpcError):
        text = err.details() or ""
    elif isinstance(err.__cause__, grpc.aio.AioRpcError):  # aetcd's mapped errors
        text = err.__cause__.details() or ""
    else:
        text = str(err)
    text = text.strip()
    return text.splitlines()[0] if text else type(err).__name__


def token_rejected(err: BaseException, *, url: etcdurl.EtcdURL) -> bool:
    """Whether etcd refused the token of `url`'s user (`TOKEN_REJECTED`)."""
    return url.user is not None and any(s in detail(err) for s in TOKEN_REJECTED)


def mapped(
    err: BaseException, what: str, *, url: etcdurl.EtcdURL, endpoints: Sequence[str]
) -> errors.CoordinationError:
    """The error that `err`, raised by `what` on `endpoints`, is to a caller."""
    if isinstance(err, etcdclient.RevisionCompactedError):
        return errors.CompactedError(
            f"etcd {what}: {err}", compacted_revision=int(err.compacted_revision)
        )
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        return errors.StoreUnavailableError(f"etcd {what}: timed out")
    said = detail(err)
    reason = explained(said, url=url, endpoints=endpoints)
    if reason is not None:
        return errors.StoreUnavailableError(reason)
    if not url.tls and said.endswith("Socket closed"):
        return errors.StoreUnavailableError(
            f"etcd {','.join(endpoints)}: the server closed the connection at once"
            " (if it serves TLS, use etcds://)"
        )
    return errors.StoreUnavailableError(f"etcd {what}: {said}")


def explained(said: str, *, url: etcdurl.EtcdURL, endpoints: Sequence[str]) -> str | None:
    """One line for a refusal by a secured etcd (`SECURITY`), None for anything else."""
    for fragment, reason in SECURITY:
        if fragment in said:
            client_cert = (
                "it requires a client certificate issued by a CA it trusts (cert= and"
                " key=, --etcd-cert and --etcd-key)"
                if url.cert is None
                else f"it did not accept the client certificate {url.cert}"
                " (not issued by a CA it trusts, or not for client auth?)"
            )
            text = reason.format(
                ca=url.ca or "the system's CAs",
                name=etcddial.server_name(url, endpoints),
                user=url.user or "(none)",
                client_cert=client_cert,
            )
            return f"etcd {','.join(endpoints)}: {text}"
    return None
