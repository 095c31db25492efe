"""bench.ingest reads the API's own request timer from its metrics."""

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.ingest import INGEST_ROUTE, SLOW_MS, slow_share, timed_posts


def exposition(posts: list[tuple[str, float]], buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS) -> str:
    """The API's request histogram after these ingestion POSTs (status, seconds)."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "aegis_http_request_seconds", "", ["method", "route", "status"], registry=registry, buckets=buckets
    )
    for status, seconds in posts:
        histogram.labels("POST", INGEST_ROUTE, status).observe(seconds)
    # Other routes and methods are not counted.
    histogram.labels("GET", INGEST_ROUTE, "200").observe(1.0)
    histogram.labels("POST", "/api/v1/traces/batch", "202").observe(1.0)
    return generate_latest(registry).decode()


def test_counts_the_ingestion_posts_slower_than_the_bound() -> None:
    posts = [("202", seconds) for seconds in (0.004, 0.03, 0.049, 0.051, 0.2)]
    assert timed_posts(exposition(posts)) == (5, 2)


def test_counts_every_status() -> None:
    assert timed_posts(exposition([("202", 0.01), ("422", 0.3)])) == (2, 1)


def test_refuses_a_histogram_without_the_bound() -> None:
    with pytest.raises(ValueError, match=f"{SLOW_MS} ms"):
        timed_posts(exposition([("202", 0.01)], buckets=(0.01, 0.1)))


def test_client_share() -> None:
    assert slow_share([10.0, 49.9, 50.0, 50.1, 300.0]) == 40.0
