"""Fixtures shared across test modules: the store's (see store_fixtures.py)."""

from tests.store_fixtures import postgres_url, store, store_backend, store_clock, store_url  # noqa: F401
