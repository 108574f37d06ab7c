"""Fixtures shared across test modules: the store's (see store_fixtures.py), and a data directory of
its own for every test (and any server process it starts), so none writes into the checkout."""

import pytest

from tests.api_fixtures import api  # noqa: F401
from tests.store_fixtures import postgres_url, store, store_backend, store_clock, store_url  # noqa: F401


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path_factory.mktemp("data")
    monkeypatch.setenv("RINGLINE_DATA_DIR", str(path))
    return path
