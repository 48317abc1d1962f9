"""The cost and health dashboard: ``/dashboard``, for the people who watch what imagegate costs.

Server-rendered HTML (Jinja2) with inline SVG charts computed in Python (``charts.py``); the
stylesheet and a small script ship in ``static/``, nothing is loaded from elsewhere. Sign-in
takes an API key with the ``admin`` scope once and keeps a signed session cookie
(``session.py``). Panels: spend per day stacked by provider, spend by team and by key, jobs by
status, provider health (breaker, p50/p95, success rate, price) and recent jobs with their
images behind signed ``/v1/files`` URLs.
"""
