"""What the proxy does to a link, one direction at a time: an added delay with jitter and
a bandwidth cap (`Shaping`), both directions' (`Limits`, also the control file's JSON),
and the token bucket that makes one direction's connections share the cap (`Bucket`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["DIRECTIONS", "TO_CLIENT", "TO_TARGET", "Bucket", "Limits", "Shaping"]

MIN_BURST, MAX_BURST = 1024, 64 * 1024  # bytes; the default burst is rate / 20 within these
TO_TARGET, TO_CLIENT = "to_target", "to_client"
DIRECTIONS = (TO_TARGET, TO_CLIENT)


@dataclasses.dataclass(frozen=True)
class Shaping:
    """One direction's impairment."""

    delay_ms: float = 0.0  # ms added to every byte
    jitter_ms: float = 0.0  # ms; each chunk's delay is uniform in delay +- jitter (>= 0)
    rate: float | None = None  # bytes/s; None: unlimited
    burst: int | None = None  # bytes the bucket holds; None: rate / 20 in [1 KiB, 64 KiB]

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"delay_ms and jitter_ms must be >= 0: {self}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0 bytes/s or None: {self}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1 byte or None: {self}")

    @property
    def bucket_size(self) -> int:
        if self.burst is not None:
            return self.burst
        rate = self.rate or 0.0
        return int(min(MAX_BURST, max(MIN_BURST, rate / 20)))


@dataclasses.dataclass(frozen=True)
class Limits:
    """Both directions' impairments."""

    to_target: Shaping = Shaping()
    to_client: Shaping = Shaping()

    @classmethod
    def both(cls, **fields: Any) -> Limits:
        """The same Shaping each way: `Limits.both(delay_ms=50)`."""
        return cls(Shaping(**fields), Shaping(**fields))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Limits:
        """Parse the control file's object; unknown keys are a ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"limits must be a JSON object, not {type(data).__name__}")
        shaping_keys = {f.name for f in dataclasses.fields(Shaping)}
        unknown = set(data) - shaping_keys - set(DIRECTIONS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; known: {sorted(shaping_keys)}")
        common = {k: v for k, v in data.items() if k in shaping_keys}
        directions: dict[str, Shaping] = {}
        for direction in DIRECTIONS:
            own = data.get(direction, {})
            if not isinstance(own, Mapping) or set(own) - shaping_keys:
                raise ValueError(f"{direction} must be an object with keys {sorted(shaping_keys)}")
            fields = {**common, **own}
            for key, value in fields.items():
                if isinstance(value, bool) or not isinstance(value, int | float | None):
                    raise ValueError(f"{direction}.{key} must be a number, not {value!r}")
            directions[direction] = Shaping(**fields)
        return cls(**directions)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Bucket:
    """A token bucket shared by one direction's connections; debt makes takers queue."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._stamp: float | None = None

    async def take(self, n: int, shaping: Shaping) -> None:
        rate = shaping.rate
        if rate is None:
            self._stamp = None  # unlimited: a later cap starts with a full bucket
            return
        now = asyncio.get_running_loop().time()
        size = shaping.bucket_size
        if self._stamp is None:
            self._tokens = float(size)
        else:
            self._tokens = min(float(size), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        self._tokens -= n
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / rate)
