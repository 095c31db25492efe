"""Prometheus metrics of Aegis: every metric object, its labels, and the endpoints that serve them.

Labels are low-cardinality by construction. Each one is drawn from a fixed
set (shipped pack names, tier names, provider kinds, error kinds, HTTP
methods, route templates); anything outside it becomes ``custom``/``other``.
No label ever holds an organisation, a trace id, a model name or any text
a user sent, so the metrics can be scraped by whoever operates the
deployment without exposing tenant data.

Counters are incremented by activities (never by workflow code, which must
stay deterministic) and only after the database transaction they describe
committed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from domains import available_domains
from evaluators.escalation import TIER_NAMES
from evaluators.judge.config import Provider
from evaluators.judge.errors import ERROR_KINDS

log = logging.getLogger(__name__)

# The text format both prometheus_client and the Temporal SDK write; fixed
# here because prometheus_client's CONTENT_TYPE_LATEST changed across versions.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# prometheus_client's own switch for multiprocess mode; `aegis api --workers N`
# sets it for its uvicorn processes (it is not a deployment setting).
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

SHIPPED_DOMAINS = frozenset(available_domains())
PROVIDERS = frozenset(get_args(Provider))
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"

EVALUATIONS = Counter(
    "aegis_evaluations_total",
    "Evaluations finished: outcome passed/failed (the automated verdict, stored with its first result) "
    "or error (the workflow gave up on the trace).",
    ["outcome", "decided_by_tier", "domain"],
)
JUDGE_CALL_SECONDS = Histogram(
    "aegis_judge_call_seconds",
    "Duration of one judge attempt as judge_calls records it: its provider calls (a first call, plus "
    "a repair call when the reply was unusable), or the time until a failed attempt failed; outcome "
    "is ok or the error kind.",
    ["provider", "outcome"],
    buckets=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0),
)
JUDGE_COST_USD = Counter(
    "aegis_judge_cost_usd_total",
    "Judge spend in USD by the price table (calls of models without a known price add nothing).",
    ["provider"],
)
JUDGE_TOKENS = Counter(
    "aegis_judge_tokens_total",
    "Tokens the judge providers reported, by direction (input or output).",
    ["provider", "direction"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "aegis_http_request_seconds",
    "API request duration by method, matched route template and response status.",
    ["method", "route", "status"],
)


def domain_label(domain: str) -> str:
    """A shipped pack's name as it is; every uploaded or unknown domain is ``custom``."""
    key = domain.strip().lower()
    return key if key in SHIPPED_DOMAINS else "custom"


def tier_label(tier: str) -> str:
    return tier if tier in TIER_NAMES else "other"


def provider_label(provider: str) -> str:
    return provider if provider in PROVIDERS else "other"


def method_label(method: str) -> str:
    # Clients choose the method: an unknown one must not create a new series.
    return method if method in HTTP_METHODS else "other"


def evaluation_stored(*, passed: bool, decided_by: str, domain: str) -> None:
    EVALUATIONS.labels(
        outcome="passed" if passed else "failed",
        decided_by_tier=tier_label(decided_by),
        domain=domain_label(domain),
    ).inc()


def evaluation_gave_up(*, domain: str) -> None:
    EVALUATIONS.labels(outcome="error", decided_by_tier="none", domain=domain_label(domain)).inc()


def judge_call(
    *,
    provider: str,
    error_kind: str | None,
    seconds: float,
    cost_usd: float | None,
    input_tokens: int,
    output_tokens: int,
) -> None:
    """One recorded judge attempt: its latency, spend and tokens."""
    provider = provider_label(provider)
    outcome = "ok" if error_kind is None else error_kind if error_kind in ERROR_KINDS else "other"
    JUDGE_CALL_SECONDS.labels(provider=provider, outcome=outcome).observe(seconds)
    if cost_usd:
        JUDGE_COST_USD.labels(provider=provider).inc(cost_usd)
    JUDGE_TOKENS.labels(provider=provider, direction="input").inc(input_tokens)
    JUDGE_TOKENS.labels(provider=provider, direction="output").inc(output_tokens)


def http_request(*, method: str, route: str | None, status: int, seconds: float) -> None:
    HTTP_REQUEST_SECONDS.labels(
        method=method_label(method), route=route or UNMATCHED_ROUTE, status=str(status)
    ).observe(seconds)


def exposition() -> bytes:
    """This process's metrics in the Prometheus text format; under
    `aegis api --workers N`, the sum over its uvicorn processes."""
    directory = os.environ.get(MULTIPROCESS_DIR_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


# --- the worker's endpoint ----------------------------------------------------


def temporal_runtime(sdk_metrics_port: int | None) -> Runtime:
    """The Temporal runtime of a worker process (create one per process).

    With a port, the SDK serves its own metrics (polls, task latencies,
    slots, RPCs; ``temporal_*``) on 127.0.0.1 there, for
    :func:`start_worker_metrics_server` to pass on: Prometheus then scrapes
    one port per pod, as the ``prometheus.io/port`` annotation allows.
    The SDK's own log lines go through Python logging (the SDK's default
    levels), so they come out in the configured format too.
    """
    prometheus = PrometheusConfig(bind_address=f"127.0.0.1:{sdk_metrics_port}") if sdk_metrics_port else None
    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    return Runtime(telemetry=TelemetryConfig(logging=logging_config, metrics=prometheus))


def free_loopback_port() -> int:
    # Free when asked and bound by the SDK a moment later: only this process
    # picks loopback ports in a worker's container.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_exposition(sdk_metrics_url: str | None) -> bytes:
    """Aegis's metrics followed by the Temporal SDK's: two text-format
    documents with disjoint metric names concatenate into a valid one."""
    body = exposition()
    if sdk_metrics_url is None:
        return body
    try:
        # urllib, not httpx: httpx logs every request at INFO, a line per scrape.
        with urllib.request.urlopen(sdk_metrics_url, timeout=5.0) as response:
            sdk = response.read()
    except OSError as exc:
        # Aegis's own counters are still worth serving.
        log.warning("Temporal SDK metrics unavailable: %s", type(exc).__name__)
        return body
    return body + sdk


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    sdk_metrics_url: str | None = None


class _MetricsHandler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = worker_exposition(self.server.sdk_metrics_url)
        self.send_response(200)
        self.send_header("Content-Type", TEXT_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """One line per scrape would be noise."""


def start_worker_metrics_server(port: int, sdk_metrics_port: int | None) -> ThreadingHTTPServer:
    """Serve ``GET /metrics`` on all interfaces (to be scraped from another
    container or pod) in a daemon thread; ``shutdown()`` stops it."""
    server = _MetricsServer(("0.0.0.0", port), _MetricsHandler)
    if sdk_metrics_port:
        server.sdk_metrics_url = f"http://127.0.0.1:{sdk_metrics_port}/metrics"
    threading.Thread(target=server.serve_forever, name="aegis-metrics", daemon=True).start()
    return server
