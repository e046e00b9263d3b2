"""`--log-format json|text`: one record a line, RFC 3339 times, structured fields as keys,
and no message (which may carry an agent's words) able to forge a second record."""

from __future__ import annotations

import datetime
import io
import json
import logging
from collections.abc import Iterator

import pytest

from mooring import _logging as logging_
from proto import _logfields as logfields

pytestmark = pytest.mark.unit

NASTY = 'agent said "no" \\ then\nFAKE 2026-01-01 00:00:00,000 ERROR x: forged\r\tüñï €✓'


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger of its own writing to a string (the root logger is left alone)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(f"mooring.test.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream, handler
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_of_keeps_given_fields_under_one_attribute_and_drops_none() -> None:
    extra = logfields.of(agent="edge-01", kind="Application", name="web", version=3, epoch=None)
    assert extra == {
        logfields.ATTR: {
            logfields.AGENT: "edge-01",
            logfields.KIND: "Application",
            logfields.NAME: "web",
            logfields.VERSION: 3,
        }
    }
    record = logging.makeLogRecord(extra)
    assert logfields.fields_of(record) == extra[logfields.ATTR]
    assert logfields.fields_of(logging.makeLogRecord({})) == {}


def test_json_is_one_line_that_reads_back_to_the_same_message_and_fields(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logging_.JsonFormatter())
    logger.warning(
        "agent %s refused %s: %s",
        "edge-01",
        "web",
        NASTY,
        extra=logfields.of(
            agent="edge-01",
            replica="p1",
            session="ab12",
            epoch=7,
            reason="refused",
            kind="Application",
            name="web",
            error=NASTY,
        ),
    )
    [line] = lines(stream)
    doc = json.loads(line)
    assert doc["message"] == f"agent edge-01 refused web: {NASTY}"
    assert doc["level"] == "WARNING"
    assert doc["logger"] == logger.name
    assert {k: doc[k] for k in ("agent", "replica", "session", "epoch", "reason")} == {
        "agent": "edge-01",
        "replica": "p1",
        "session": "ab12",
        "epoch": 7,
        "reason": "refused",
    }
    assert doc["kind"] == "Application" and doc["name"] == "web" and doc["error"] == NASTY
    assert list(doc)[:4] == ["time", "level", "logger", "message"]
    assert "exception" not in doc
    assert line.isascii()


def test_json_time_is_rfc3339_utc_with_milliseconds(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logging_.JsonFormatter())
    before = datetime.datetime.now(datetime.UTC)
    logger.info("tick")
    after = datetime.datetime.now(datetime.UTC)
    stamp = json.loads(lines(stream)[0])["time"]
    assert len(stamp) == len("2026-12-01T09:15:02.123Z") and stamp.endswith("Z")
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.utcoffset() == datetime.timedelta(0)
    assert before - datetime.timedelta(milliseconds=1) <= parsed <= after

    moment = datetime.datetime(2026, 12, 1, 9, 15, 2, 123456, tzinfo=datetime.UTC)
    assert logging_.rfc3339(moment.timestamp()) == "2026-12-01T09:15:02.123Z"


def test_json_carries_flat_extras_and_never_lets_a_field_replace_the_message(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logging_.JsonFormatter())
    # election's transition lines pass their fields flat: they are fields too
    logger.info("election: leader", extra={"replica": "p2", "fencing_token": 4})
    logger.info("hello", extra={logfields.ATTR: {"message": "forged", "level": "x", "agent": "a"}})
    first, second = (json.loads(line) for line in lines(stream))
    assert first["replica"] == "p2" and first["fencing_token"] == 4
    assert second["message"] == "hello" and second["level"] == "INFO" and second["agent"] == "a"


def test_json_exception_is_the_traceback_inside_the_one_line(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logging_.JsonFormatter())
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("session loop failed", extra=logfields.of(agent="edge-01"))
    [line] = lines(stream)
    doc = json.loads(line)
    assert doc["message"] == "session loop failed" and doc["agent"] == "edge-01"
    assert doc["exception"].startswith("Traceback (most recent call last):")
    assert doc["exception"].endswith("ValueError: bad\nvalue")


def test_text_keeps_its_layout_and_appends_fields_as_pairs(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logging_.TextFormatter())
    logger.info(
        "agent %s: applied %s %s (version %d)",
        "edge-01",
        "Application",
        "web",
        3,
        extra=logfields.of(agent="edge-01", kind="Application", name="web", version=3),
    )
    [line] = lines(stream)
    head, _, rest = line.partition(f" INFO {logger.name}: ")
    datetime.datetime.strptime(head, "%Y-%m-%d %H:%M:%S,%f")  # as before: asctime
    assert rest == (
        "agent edge-01: applied Application web (version 3)"
        " agent=edge-01 kind=Application name=web version=3"
    )


def test_text_escapes_line_breaks_and_control_characters_so_nothing_is_forged(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logging_.TextFormatter())
    logger.warning(
        "agent %s refused web: %s",
        "edge-01",
        NASTY + "\x1b[31m\u2028\x85",
        extra=logfields.of(agent="edge-01", error=NASTY, reason=""),
    )
    [line] = lines(stream)  # splitlines breaks at \r, \u2028, \x85 too
    assert "\\n" in line and "\\r" in line and "\\x1b" in line
    assert '"no" \\ then' in line and "üñï €✓" in line  # printable text stays as it was
    assert line.endswith(f" agent=edge-01 reason='' error={NASTY!r}")


def test_text_exception_lines_are_indented_under_their_record(capture) -> None:
    logger, stream, handler = capture
    handler.setFormatter(logging_.TextFormatter())
    try:
        raise ValueError("bad\n2026-01-01 00:00:00,000 ERROR x: forged")
    except ValueError:
        logger.exception("boom")
    first, *rest = lines(stream)
    assert first.endswith(": boom")
    assert rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest)
    assert rest[-1] == "    2026-01-01 00:00:00,000 ERROR x: forged"


def test_setup_installs_one_handler_on_the_root_and_replaces_its_own() -> None:
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    first, second = io.StringIO(), io.StringIO()
    try:
        logging_.setup("INFO", "text", first)
        handler = logging_.setup("DEBUG", "json", second)
        ours = [h for h in root.handlers if h.get_name() == "mooring"]
        assert ours == [handler]
        assert root.level == logging.DEBUG
        logging.getLogger("principal._session").debug("x", extra=logfields.of(agent="a"))
        assert first.getvalue() == ""
        doc = json.loads(second.getvalue())
        assert doc["message"] == "x" and doc["agent"] == "a" and doc["level"] == "DEBUG"
        with pytest.raises(ValueError, match="unknown log format"):
            logging_.setup("INFO", "yaml", second)
    finally:
        for h in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(h)
            h.close()
        root.setLevel(saved_level)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_huge_message_or_field_is_cut_and_says_so(fmt: str) -> None:
    stream = io.StringIO()
    handler = logging_.setup("INFO", fmt, stream)
    try:
        name = "x" * 900_000  # what a hostile hello may claim
        logging.getLogger("test.huge").warning(
            "refused %s", name, extra=logfields.of(agent=name, reason="identity_mismatch")
        )
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue()
    assert len(line) < 3 * logging_.MAX_TEXT + 500
    assert f"... ({900_000 + len('refused ') - logging_.MAX_TEXT} more characters)" in line
    assert "identity_mismatch" in line
