"""Shared fixtures: every test gets its own AUDITLAKE_HOME (keystore and trust store) so no
test sees another's keys, and a fresh local lake folder."""
from __future__ import annotations

import pytest

pytest_plugins = ["fixtures_s3"]


@pytest.fixture(autouse=True)
def auditlake_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("auditlake_home")
    monkeypatch.setenv("AUDITLAKE_HOME", str(home))
    monkeypatch.delenv("AUDITLAKE_LAKE", raising=False)
    return home


@pytest.fixture
def lake_dir(tmp_path):
    return tmp_path / "lake"


@pytest.fixture
def lake(lake_dir):
    from auditlake.lake.store import Lake

    return Lake.open(str(lake_dir))


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """A small generated landing set with ground truth, shared read-only by tests."""
    from auditlake.generate import generate

    out = tmp_path_factory.mktemp("generated")
    generate(out, events=3000, seed=7, days=20)
    return out
