"""The session plane: which replica holds which agent, in Redis, with TTLs and fencing tokens.

The one module that imports `redis`. One hash per agent, `<prefix>session:<agent>`,
holds {replica, epoch, token, session, since_ms}; a replica must hold the entry to
serve the agent (invariant I1: at most one holder at any instant, enforced by Redis
executing the scripts below atomically). Tokens come from a per-agent counter and
only grow, also across a restart of Redis (a new counter starts at Redis's clock in
ms), so a stale holder's renew or release is refused.

Presence: `<prefix>seen:<agent>` keeps the last time any replica heard from the agent.

Liveness: every replica keeps `<prefix>alive:<replica>` with a short TTL (1 s by
default, `--liveness-ttl`), beaten every fifth of it. An entry whose holder's liveness
key is gone may be taken over at once, so the agents of a crashed replica are served
again within about that TTL instead of the entry's. A replica that cannot confirm its
liveness key within 75 % of that TTL closes every session it holds (self-fence) before
anyone could take them over.

While Redis is unreachable nobody can acquire, so no handoff happens; holders fence
themselves as above and agents retry until Redis is back.

The URL is redis-py's: `rediss://` for TLS, with its `ssl_ca_certs=FILE` (and
`ssl_certfile=`, `ssl_keyfile=` for a client certificate) query options, and an ACL
user as `rediss://USER:PASSWORD@HOST:PORT`. It may hold a password, so no message
here ever shows it (`check_url`); redis-py's own errors name only host and port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.exceptions

from principal import _errors as errors

__all__ = ["Entry", "RegistryError", "SessionRegistry", "check_url"]

# KEYS[1]=entry KEYS[2]=token counter KEYS[3]=agent name; ARGV: replica, epoch, session,
# ttl_ms, now_ms, prefix. Taking the entry also records the agent as seen now.
# Another replica's entry is taken over only when that replica's liveness key is gone:
# it stopped beating, and a replica fences itself before its key can expire. A refusal
# says how many ms that key still lives, so a stand-in for a dead holder waits exactly
# that long instead of polling. A replica whose own liveness key is gone (it is fenced,
# or about to be) takes nothing: -3.
# A missing token counter (first use, or a Redis restarted without persistence) starts
# at Redis's clock in ms, so tokens keep growing across restarts: a history ordered by
# token stays in grant order. Lua turns numbers into strings with 14 significant
# digits, which ms since 1970 fit in (13 digits) for millennia.
_ACQUIRE = """
if redis.call('EXISTS', ARGV[6] .. 'alive:' .. ARGV[1]) == 0 then
  return {0, '', '0', -3}
end
local holder = redis.call('HGET', KEYS[1], 'replica')
if holder and holder ~= ARGV[1] then
  local alive_ms = redis.call('PTTL', ARGV[6] .. 'alive:' .. holder)
  if alive_ms ~= -2 then
    return {0, holder, redis.call('HGET', KEYS[1], 'token') or '0', alive_ms}
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'replica', ARGV[1], 'epoch', ARGV[2], 'token', token,
           'session', ARGV[3], 'since_ms', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SET', ARGV[6] .. 'seen:' .. KEYS[3], ARGV[5], 'EX', 86400)
return {1, ARGV[1], tostring(token), 0}
"""

# KEYS=entries; ARGV: replica, ttl_ms, now_ms, prefix, token per key -> list of 1 renewed /
# 0 lost. A renewal also records the agent as seen now (presence, for last-seen metrics).
_RENEW_MANY = """
local out = {}
local skip = #ARGV[4] + #'session:'
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'replica') == ARGV[1] and redis.call('HGET', key, 'token') == ARGV[i + 4] then
    redis.call('PEXPIRE', key, ARGV[2])
    redis.call('SET', ARGV[4] .. 'seen:' .. string.sub(key, skip + 1), ARGV[3], 'EX', 86400)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS[1]=entry; ARGV: replica, token -> 1 released, 0 not ours
_RELEASE = """
if redis.call('HGET', KEYS[1], 'replica') == ARGV[1] and redis.call('HGET', KEYS[1], 'token') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so asyncio does not log it as unretrieved."""
    if not task.cancelled():
        task.exception()


def check_url(url: str) -> None:
    """ValueError unless `url` is a Redis URL redis-py takes: redis://, rediss:// (TLS,
    with redis-py's ssl_ca_certs=, ssl_certfile=, ssl_keyfile=, ssl_cert_reqs= options) or
    unix://. The message never shows the URL: it may hold a password."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            "bad --redis: expected redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss://... (TLS)"
            " or unix://PATH"
        )
    query = urllib.parse.urlsplit(url).query
    tls = sorted({k for k, _ in urllib.parse.parse_qsl(query) if k.startswith("ssl_")})
    if tls and not url.startswith("rediss://"):
        raise ValueError(f"bad --redis: {tls[0]}= is a TLS option: use rediss://")


class RegistryError(errors.PrincipalError):
    """Redis did not answer (or answered garbage); retryable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    agent: str
    replica: str
    epoch: int
    token: int
    session: str
    since_ms: int


class _AbortingSSLConnection(aioredis.SSLConnection):
    """redis-py drops a connection after an error (a refused AUTH, a read timeout) with
    `disconnect(nowait=True)`: it closes the TLS stream without waiting, and asyncio then
    waits for the server's TLS close, up to 30 s (measured after a wrong password: the
    socket outlived its event loop and was reported unclosed). Such a connection is dead
    to us: abort it, so its socket is closed at once."""

    async def disconnect(
        self,
        nowait: bool = False,
        error: Exception | None = None,
        failure_count: int | None = None,
        health_check_failed: bool = False,
    ) -> None:
        writer = getattr(self, "_writer", None)
        await super().disconnect(
            nowait=nowait,
            error=error,
            failure_count=failure_count,
            health_check_failed=health_check_failed,
        )
        if nowait and writer is not None:
            writer.transport.abort()


class SessionRegistry:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "mooring:",
        ttl: float = 6.0,
        timeout: float = 1.0,
        beat_timeout: float | None = None,  # seconds per liveness call (default: timeout)
    ) -> None:
        check_url(url)
        if ttl <= 3 * timeout:
            raise ValueError("session ttl must exceed three request timeouts")
        self.url = url
        self.prefix = prefix
        self.ttl = ttl  # seconds an entry lives without renewal
        self.timeout = timeout  # seconds per Redis call
        self.client: Any = self._client(size=64, timeout=timeout)
        # Liveness and renewals get a pool of their own: a storm of acquires must never
        # starve the beat, or the whole replica would fence itself. A beat must fail fast
        # enough for the next one to land before the replica fences.
        self.beat_client: Any = self._client(size=2, timeout=beat_timeout or timeout)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._release = self.client.register_script(_RELEASE)
        self._renew_many = self.beat_client.register_script(_RENEW_MANY)
        # The liveness beat runs on a thread of its own (see principal._holds), with a
        # blocking client: a busy event loop must not let the key lapse.
        self._beat_timeout = beat_timeout or timeout
        self._blocking: Any = None
        self._background: set[asyncio.Future[Any]] = set()  # releases of abandoned takes

    def _client(self, *, size: int, timeout: float) -> Any:
        # A blocking pool: during a reconnect storm calls queue for a connection (up to
        # `timeout`) instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry_on_timeout=False,
        )
        if pool.connection_class is aioredis.SSLConnection:
            pool.connection_class = _AbortingSSLConnection
        return aioredis.Redis(connection_pool=pool)

    def _entry_key(self, agent: str) -> str:
        return f"{self.prefix}session:{agent}"

    async def close(self) -> None:
        """Close both clients (never raises). Calls still running in the background (a
        cancelled caller's command, a release) finish first, up to one timeout, so none
        of them opens a connection after the pools are closed."""
        if self._background:
            _, late = await asyncio.wait(set(self._background), timeout=self.timeout)
            for task in late:
                task.cancel()
        for client in (self.client, self.beat_client):
            try:
                await client.aclose()
                await client.connection_pool.disconnect()
            except Exception:  # closing never raises; the other client still closes
                pass

    async def _call(self, coro: Any, *, abandoned: Callable[[Any], None] | None = None) -> Any:
        # The call runs as a task of its own and we wait for it through a shield:
        # redis-py 8.1's asyncio client can swallow a cancellation that lands while a
        # command is in flight (measured: a cancelled renew loop kept running), which
        # would leave our caller un-cancellable (a TaskGroup that never ends). Through
        # the shield our caller is cancelled at once; the command finishes or times out
        # in the background and gives its connection back.
        task = asyncio.ensure_future(coro)
        try:
            return await asyncio.shield(task)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RegistryError(f"redis: {detail}") from err
        except asyncio.CancelledError:
            self._background.add(task)  # close() waits for it
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_discard_outcome)
            if abandoned is not None:
                task.add_done_callback(
                    lambda done: (
                        abandoned(done.result())
                        if not done.cancelled() and done.exception() is None
                        else None
                    )
                )
            raise

    async def acquire(
        self, agent: str, *, replica: str, epoch: int, session: str
    ) -> tuple[bool, str, int, float]:
        """(acquired, holder, token, holder_alive): take the entry unless another live
        replica holds it; when refused, holder_alive is how many seconds the holder's
        liveness key still lives (-0.001 if it has no expiry)."""
        now_ms = int(time.time() * 1000)

        def abandoned(result: Any) -> None:
            # Our caller was cancelled but the script ran: give back what it took, or
            # the entry would lock the agent out of every other replica for a TTL.
            if int(result[0]):
                self._spawn(self.release(agent, replica=replica, token=int(result[2])))

        ok, holder, token, alive_ms = await self._call(
            self._acquire(
                keys=[self._entry_key(agent), f"{self.prefix}token:{agent}", agent],
                args=[replica, epoch, session, int(self.ttl * 1000), now_ms, self.prefix],
            ),
            abandoned=abandoned,
        )
        if int(alive_ms) == -3:
            raise RegistryError(f"replica {replica} has no liveness key: it takes no entry")
        return bool(int(ok)), str(holder), int(token), int(alive_ms) / 1000

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_discard_outcome)

    async def renew_many(self, held: dict[str, int], *, replica: str) -> dict[str, bool]:
        """Renew several entries in one round trip; agent -> still ours."""
        if not held:
            return {}
        agents = list(held)
        results = await self._call(
            self._renew_many(
                keys=[self._entry_key(a) for a in agents],
                args=[
                    replica,
                    int(self.ttl * 1000),
                    int(time.time() * 1000),
                    self.prefix,
                    *(held[a] for a in agents),
                ],
            )
        )
        return {agent: bool(int(r)) for agent, r in zip(agents, results, strict=True)}

    def beat_blocking(self, replica: str, *, ttl: float) -> None:
        """Keep this replica's liveness key for `ttl` seconds more (blocking; one thread)."""
        if self._blocking is None:
            self._blocking = redis.Redis.from_url(
                self.url,
                socket_timeout=self._beat_timeout,
                socket_connect_timeout=self._beat_timeout,
                retry_on_timeout=False,
            )
        try:
            self._blocking.set(f"{self.prefix}alive:{replica}", "1", px=int(ttl * 1000))
        except (redis.exceptions.RedisError, OSError, TimeoutError) as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RegistryError(f"redis: {detail}") from err

    def close_blocking(self) -> None:
        """Close the beat thread's client (call once that thread has ended)."""
        if self._blocking is not None:
            try:
                self._blocking.close()
            except Exception:  # closing never raises
                pass
            self._blocking = None

    async def forget(self, replica: str) -> None:
        """Drop the liveness key at a graceful stop, so entries left behind free at once."""
        await self._call(self.beat_client.delete(f"{self.prefix}alive:{replica}"))

    async def release(self, agent: str, *, replica: str, token: int) -> bool:
        got = await self._call(self._release(keys=[self._entry_key(agent)], args=[replica, token]))
        return bool(int(got))

    async def entries(self) -> dict[str, Entry]:
        """Every current entry (for `mooring status`); a scan, not for hot paths."""
        out: dict[str, Entry] = {}

        async def scan() -> list[str]:
            match = f"{self.prefix}session:*"
            return [k async for k in self.client.scan_iter(match=match, count=500)]

        keys = await self._call(scan())  # its errors too are RegistryErrors
        if not keys:
            return out
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for key, data in zip(keys, await self._call(pipe.execute()), strict=True):
            if data:
                agent = key[len(f"{self.prefix}session:") :]
                out[agent] = Entry(
                    agent=agent,
                    replica=data.get("replica", ""),
                    epoch=int(data.get("epoch", 0)),
                    token=int(data.get("token", 0)),
                    session=data.get("session", ""),
                    since_ms=int(data.get("since_ms", 0)),
                )
        return out

    async def last_seen(self, agents: list[str]) -> dict[str, int | None]:
        if not agents:
            return {}
        values = await self._call(self.client.mget([f"{self.prefix}seen:{a}" for a in agents]))
        return {a: (int(v) if v else None) for a, v in zip(agents, values, strict=True)}

    async def ping(self) -> bool:
        """Whether Redis answers a PING within the client's timeout."""
        try:
            return bool(await self._call(self.client.ping()))
        except RegistryError:
            return False
