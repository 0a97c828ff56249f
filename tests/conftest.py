"""Shared fixtures: every test gets its own AUDITLAKE_HOME (keystore and trust store) so no
test sees another's keys, and a fresh local lake folder."""
from __future__ import annotations

import logging

import pytest

pytest_plugins = ["fixtures_s3"]

# GX's SQLite pools are finalized by the garbage collector in whatever thread runs then, and
# log the cross-thread close as an error with its traceback. Python 3.11 formats a traceback
# with ast.parse, and its AST constructor keeps one recursion depth per interpreter
# (python/cpython#106905): when that collection lands inside Streamlit's ast.parse of the
# page script (AppTest), the script fails to compile. Those log records are noise here.
logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)


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
