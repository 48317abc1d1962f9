"""Every Prometheus series imagegate exposes, defined once.

The series live in prometheus-client's process-wide default registry, as the library intends:
one process is one scrape target (see ``app.metrics`` for the multi-process layout), and the
default registry also carries the ``process_*`` and ``python_*`` collectors for free.

Units: seconds for durations, integer micro-dollars (1 USD = 1,000,000) for money, so the cost
counters add up exactly and match the job store and ``/v1/usage`` to the micro-dollar.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# HTTP answers are milliseconds; `Prefer: wait` may hold one for up to 60 s.
HTTP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Upstream calls: a poll takes tens of milliseconds, a synchronous generation tens of seconds.
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# From admission to a terminal state: seconds to minutes.
JOB_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# How late a worker picks up a due step: the poll lag. Healthy is well under a second.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUEST_SECONDS = Histogram(
    "imagegate_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)

JOBS_CREATED = Counter(
    "imagegate_jobs_created",
    "Jobs admitted, by model and the provider first in their route plan.",
    ["provider", "model"],
)
JOBS_FINISHED = Counter(
    "imagegate_jobs_finished",
    "Jobs that reached a terminal state, by the provider that last held them, model and status.",
    ["provider", "model", "status"],
)
JOB_SECONDS = Histogram(
    "imagegate_job_duration_seconds",
    "Time from admission to a terminal state, by provider and status.",
    ["provider", "status"],
    buckets=JOB_BUCKETS,
)
JOB_COST_MICROS = Counter(
    "imagegate_job_cost_micro_usd",
    "Actual cost of finished jobs in micro-dollars (1 USD = 1,000,000), by provider and team id.",
    ["provider", "team"],
)
IMAGES_STORED = Counter(
    "imagegate_images_stored",
    "Output images copied into imagegate's storage, by provider.",
    ["provider"],
)

UPSTREAM_SECONDS = Histogram(
    "imagegate_upstream_request_duration_seconds",
    "Time of one HTTP call to an upstream (failed calls included), by provider and operation "
    "(submit, poll, cancel, fetch).",
    ["provider", "operation"],
    buckets=UPSTREAM_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "imagegate_upstream_errors",
    "Failed upstream HTTP calls by provider, operation and kind (not_accepted, outcome_unknown, "
    "rejected, transient, protocol) and the upstream's HTTP status ('none' without an answer).",
    ["provider", "operation", "kind", "status"],
)

JOBS_IN_FLIGHT = Gauge(
    "imagegate_jobs_in_flight",
    "Jobs not yet terminal, by status, stage and provider, read from the job store at scrape "
    "time. Cluster-wide: every process reports the same figure, aggregate with max(), not sum().",
    ["status", "stage", "provider"],
)
CLAIM_LAG_SECONDS = Histogram(
    "imagegate_worker_claim_lag_seconds",
    "Time from a job's step being due to a worker claiming it, by stage; the poll lag is "
    "stage=~'upstream_queued|running', the dispatch lag stage='queued'.",
    ["stage"],
    buckets=LAG_BUCKETS,
)
BREAKER_STATE = Gauge(
    "imagegate_provider_breaker_state",
    "Circuit breaker per provider: 0 closed, 1 half-open (one probe allowed), 2 open.",
    ["provider"],
)
SCRAPE_ERRORS = Counter(
    "imagegate_metrics_refresh_errors",
    "Scrapes whose scrape-time figures (jobs in flight, breakers) could not be read, by source.",
    ["source"],
)

BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}
UNROUTED = "none"  # the provider label of a job no provider has held yet
