"""Shared fixtures: every test gets its own AUDITLAKE_HOME (keystore and trust store) so no
test sees another's keys, and a fresh local lake folder."""
from __future__ import annotations

import ast
import threading

import pytest

pytest_plugins = ["fixtures_s3"]

# CPython 3.11 keeps the AST constructor's recursion depth per interpreter, not per thread:
# two threads in ast.parse at once can fail with "AST constructor recursion depth mismatch"
# (python/cpython#106905). AppTest parses the page script in its own thread while pytest's
# assertion rewriting parses modules in the main thread, so here they parse one at a time.
_ast_parse, _ast_lock = ast.parse, threading.Lock()


def _parse_one_at_a_time(*args, **kwargs):
    with _ast_lock:
        return _ast_parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time


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
