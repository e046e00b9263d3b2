"""`--log-format json|text`: one formatter per format, and `setup` for the command line.

json: one object per line, `json.dumps` of `time` (RFC 3339, UTC, milliseconds, `Z`),
`level`, `logger`, `message`, then the record's structured fields as top-level keys
(`proto._logfields`, and any other `extra=` keys), then `exception` (the traceback) or
`stack` when the call asked for them. A field never replaces one of the first four keys.

text: `ASCTIME LEVEL LOGGER: MESSAGE key=value ...`, with a value quoted (repr) when it
holds a space, a quote, `=` or a control character. Messages may carry text an agent
chose (an error it reports, a name): every line break and control character in the
message and the fields is escaped (`\\n`, `\\x1b`, ...), and each line of a traceback is
indented, so no record can pass for another. Only lines that start with a time are records.

Both formats cut a message or a field value at MAX_TEXT characters and say how much
was cut: a peer that sends a 900 KB name must not turn each refusal into 900 KB of log.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Iterable
from typing import IO, Any

from proto import logfields

__all__ = ["MAX_TEXT", "JsonFormatter", "TextFormatter", "clip", "setup"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CORE_KEYS = ("time", "level", "logger", "message")
MAX_TEXT = 2048
"""Characters of a message or field value kept in a log line."""

# Every attribute a LogRecord has of its own; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    logfields.ATTR,
}
# What str.splitlines() breaks at, and every other control character but tab.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NEEDS_QUOTES = re.compile("[\\s'\"=\\\\]|[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: `extra=` keys of its own, then `logfields.of`'s."""
    found = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
    found.update(logfields.fields_of(record))
    return found


def rfc3339(created: float) -> str:
    """A record's time as RFC 3339 in UTC with milliseconds: 2026-12-01T09:15:02.123Z."""
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def clip(text: str) -> str:
    """`text`, cut at MAX_TEXT characters with a note of how many were left out."""
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}... ({len(text) - MAX_TEXT} more characters)"


def _clipped(value: Any) -> Any:
    return clip(value) if isinstance(value, str) else value


def escape(text: str) -> str:
    """One physical line: line breaks and control characters as backslash escapes."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char) or repr(char)[1:-1]


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return repr(text)  # repr escapes what is unprintable; `escape` catches the rest
    return text


def _indented(text: str) -> Iterable[str]:
    for line in text.splitlines():
        yield "    " + escape(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`json.dumps` escapes quotes, backslashes, line breaks)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": clip(record.getMessage()),
        }
        for key, value in record_fields(record).items():
            out.setdefault(key, _clipped(value))
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Today's text lines, with the structured fields appended as ` key=value`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = clip(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [
            escape(self.formatMessage(record))
            + "".join(
                f" {escape(str(key))}={escape(_value(_clipped(value)))}"
                for key, value in record_fields(record).items()
            )
        ]
        # Not record.exc_text: another handler's formatter may have cached it unindented.
        if record.exc_info:
            lines.extend(_indented(self.formatException(record.exc_info)))
        elif record.exc_text:
            lines.extend(_indented(record.exc_text))
        if record.stack_info:
            lines.extend(_indented(self.formatStack(record.stack_info)))
        return "\n".join(lines)


def setup(level: str | int, fmt: str, stream: IO[str]) -> logging.Handler:
    """Send every record at `level` or above to `stream` in `fmt` (json or text), through
    one handler on the root logger (replacing one an earlier `setup` installed)."""
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r} (json or text)")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("mooring")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "mooring"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
