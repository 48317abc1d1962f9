"""Prometheus metrics for the API, the worker and the upstream calls.

Series (``registry.py`` defines them all; money in integer micro-dollars, times in seconds):

==============================================  =========================================
``imagegate_http_request_duration_seconds``     histogram: method, route (template), status
``imagegate_jobs_created_total``                counter: provider (first planned), model
``imagegate_jobs_finished_total``               counter: provider, model, status
``imagegate_job_duration_seconds``              histogram: provider, status (admission to end)
``imagegate_job_cost_micro_usd_total``          counter: provider, team (team id)
``imagegate_images_stored_total``               counter: provider
``imagegate_upstream_request_duration_seconds`` histogram: provider, operation
``imagegate_upstream_errors_total``             counter: provider, operation, kind, status
``imagegate_jobs_in_flight``                    gauge: status, stage, provider (from the DB)
``imagegate_worker_claim_lag_seconds``          histogram: stage (due -> claimed: poll lag)
``imagegate_provider_breaker_state``            gauge: provider (0 closed, 1 half-open, 2 open)
``imagegate_metrics_refresh_errors_total``      counter: source
==============================================  =========================================

Operations are ``submit``, ``poll``, ``cancel`` and ``fetch`` (the output copy). Job counters
move only when the transaction that justifies them commits (``jobs.py``).

Processes. Each process is its own scrape target and counts only what it did itself:

- ``imagegate serve`` (embedded): one process, ``/metrics`` on the API port covers everything.
- ``imagegate api`` x N: ``/metrics`` on each API port (HTTP requests, admissions, cancels).
- ``imagegate worker`` x M: set ``IMAGEGATE_WORKER_METRICS_PORT`` (and
  ``IMAGEGATE_WORKER_METRICS_HOST``, default 127.0.0.1) and each worker serves ``/metrics``,
  ``/healthz`` and ``/readyz`` on that port (``server.py``): submits, polls, finished jobs,
  costs, upstream calls, poll lag.

Sum counters and histograms across targets (``sum by (provider) (rate(...))``). The two
scrape-time gauges are cluster-wide facts read from shared state (the job store, the shared
breakers), so every target reports the same value: aggregate them with ``max``, not ``sum``.
prometheus-client's multiprocess mode is not used: processes here are independent programs on
possibly different hosts, and one target per process is what Prometheus service discovery
expects. With ``IMAGEGATE_METRICS_TOKEN`` set, ``/metrics`` asks for that bearer token.
"""
