"""The one reader of a /metrics answer: series kept per label set, and what `mooring status`
takes from them."""

from __future__ import annotations

import prometheus_client as prom
import pytest

from mooring import _status as status_
from proto import catalog, exposition

pytestmark = pytest.mark.unit


def exported(registry: prom.CollectorRegistry) -> exposition.Samples:
    return exposition.Samples.parse(prom.generate_latest(registry).decode())


@pytest.fixture
def registry() -> prom.CollectorRegistry:
    return prom.CollectorRegistry(auto_describe=True)


def test_a_labelled_counter_is_summed_over_its_series_not_maxed(
    registry: prom.CollectorRegistry,
) -> None:
    sent = prom.Counter("sent", "Events sent.", ["type"], registry=registry)
    sent.labels("welcome").inc(2)
    sent.labels("event").inc(5)
    samples = exported(registry)
    assert samples.sum("sent_total") == 7.0
    assert samples.sum("sent_total", type="welcome") == 2.0
    assert samples.value("sent_total", type="event") == 5.0
    assert samples.value("sent_total") is None  # no unlabelled series: exact match only
    assert samples.series("sent_total") == {
        frozenset({("type", "welcome")}): 2.0,
        frozenset({("type", "event")}): 5.0,
    }


def test_sum_matches_the_series_that_include_the_labels(
    registry: prom.CollectorRegistry,
) -> None:
    moved = prom.Counter("moved", "Transitions.", ["from_state", "to_state"], registry=registry)
    moved.labels("follower", "leader").inc()
    moved.labels("candidate", "leader").inc(2)
    moved.labels("leader", "follower").inc(4)
    samples = exported(registry)
    assert samples.sum("moved_total", to_state="leader") == 3.0
    assert samples.sum("moved_total", to_state="leader", from_state="candidate") == 2.0
    assert samples.sum("moved_total", to_state="nowhere") is None
    assert samples.value("moved_total", to_state="leader") is None  # no exact match


def test_absent_names_are_none_never_zero(registry: prom.CollectorRegistry) -> None:
    prom.Gauge("leader", "Leading.", registry=registry).set(1)
    prom.Counter("closed", "Closed.", ["reason"], registry=registry)  # no series yet
    samples = exported(registry)
    assert samples.value("leader") == 1.0
    assert samples.sum("leader") == 1.0
    assert samples.value("no_such_metric") is None
    assert samples.sum("closed_total") is None
    assert samples.series("closed_total") == {}


def test_a_histogram_is_read_by_its_sample_names(registry: prom.CollectorRegistry) -> None:
    acks = prom.Histogram("ack_seconds", "Acks.", buckets=(0.1, 1.0), registry=registry)
    acks.observe(0.05)
    acks.observe(0.5)
    samples = exported(registry)
    assert samples.value("ack_seconds_count") == 2.0
    assert samples.value("ack_seconds_sum") == pytest.approx(0.55)
    assert samples.value("ack_seconds_bucket", le="0.1") == 1.0


def test_a_label_named_name_is_a_label() -> None:
    samples = exposition.Samples.parse('x{name="a"} 1\nx{name="b"} 2\n')
    assert samples.value("x", name="b") == 2.0
    assert samples.sum("x") == 3.0


def test_text_that_is_not_the_format_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        exposition.Samples.parse("mooring_leader one\n")


def test_nothing_listening_is_none() -> None:
    assert exposition.scrape("127.0.0.1:1", timeout=1.0) is None


def test_status_reads_the_refusal_and_the_replica_figures(
    registry: prom.CollectorRegistry,
) -> None:
    refused = catalog.gauge(registry, catalog.AGENT_REFUSED)
    refused.labels("identity_mismatch").set(0)
    refused.labels("mode_conflict").set(1)
    catalog.gauge(registry, catalog.SHARD_EPOCH).set(7)
    samples = exported(registry)
    assert status_.refused(samples) == "mode_conflict"
    refused.labels("mode_conflict").set(0)
    assert status_.refused(exported(registry)) is None
    metrics = status_.replica_metrics(samples)
    assert metrics == dict.fromkeys(status_.REPLICA_SAMPLES) | {catalog.SHARD_EPOCH.name: 7.0}
    assert status_.replica_metrics(None) == dict.fromkeys(status_.REPLICA_SAMPLES)
