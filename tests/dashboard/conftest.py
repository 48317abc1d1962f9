"""Fixtures for the dashboard: a fresh, empty job store per test on each backend, so every
figure on the page comes from that test's own scripted run."""

from tests.metrics.conftest import fresh_backend

__all__ = ["fresh_backend"]
