"""The command line's contract (INTERFACES.md): one JSON document with --json, exit 2 and one
line on stderr for usage and I/O errors, the lake named by --lake, AUDITLAKE_LAKE or ./lake."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from auditlake.cli import main
from auditlake.ingest import ingest
from events import event, write_jsonl


@pytest.fixture
def small(lake, tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(6)])
    ingest(lake, [str(tmp_path / "in")])
    return lake


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("auditlake: "), captured
    return lines[0]


def test_demo_json_is_one_document(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--events", "1500", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verify"]["ok"] and doc["verify"]["events"] == doc["ingest"]["accepted"] > 0
    assert doc["lake"] == str(tmp_path / "lake") and doc["catalog"].endswith("catalog.duckdb")
    assert doc["compliance"]["findings"] > 0
    # The hints run as printed from any folder, the venv not activated (DAGSTER_HOME must be absolute).
    env, dagster, dev, w, workspace = shlex.split(doc["operate"])[1:]
    assert env == f"AUDITLAKE_LAKE={tmp_path / 'lake'}" and (dev, w) == ("dev", "-w")
    assert os.access(dagster, os.X_OK) and Path(workspace).is_file()
    home = shlex.split(doc["operate"])[0].split("=", 1)[1]
    assert Path(home).is_absolute() and Path(home).parent == Path(workspace).parent
    auditlake, lake, where, explore = shlex.split(doc["explore"])
    assert os.access(auditlake, os.X_OK) and (lake, where, explore) == ("--lake", str(tmp_path / "lake"), "explore")


@pytest.mark.parametrize("argv", [["generate", "--events", "-5", "--out", "x"], ["generate", "--events", "0", "--out", "x"],
                                  ["generate", "--events", "10", "--days", "0", "--out", "x"],
                                  ["demo", "--events", "0"]])
def test_counts_below_one_are_usage_errors(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "must be at least 1" in _one_error_line(capsys)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv", [["hold", "status"], ["prove", "an-event"], ["explore"]])
def test_a_path_that_holds_no_lake_is_said_so(argv, tmp_path, capsys, monkeypatch):
    """Not "no legal hold is active" or "no event": a mistyped lake path is an error."""
    import subprocess

    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("the explorer started"))
    assert main(["--lake", str(tmp_path / "nowhere"), *argv]) == 2
    assert "no lake at" in _one_error_line(capsys)


@pytest.mark.parametrize("argv", [["verify", "--json"], ["--json", "verify"], ["verify", "--json", "--bogus"],
                                  ["prove", "no-such-event", "--json"], ["export", "--out", "{tmp}/x", "--format", "xml", "--json"]])
def test_json_errors_are_a_document_on_stdout_too(argv, small, tmp_path, capsys):
    """--json promises one document on stdout: a usage or I/O error is one as well, besides its line on stderr."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    lake_args = ["--lake", str(tmp_path / "nowhere")] if "verify" in argv else ["--lake", small.uri]
    try:
        code = main(lake_args + argv)
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert code == 2 and doc["ok"] is False and doc["error"] and out.err == f"auditlake: {doc['error']}\n"
    if "verify" in argv:  # verify's document keeps its contract shape: ok is false exactly when findings is non-empty
        (finding,) = doc["findings"]
        assert doc["events"] == 0 and finding == {"kind": "error", "table": "lake", "partition": None, "file": None,
                                                  "seq": None, "event_id": None, "detail": doc["error"]}


@pytest.mark.parametrize("flag, value", [("--subject", " "), ("--tenant", ""), ("--event-type", ","), ("--from", "")])
def test_a_blank_export_filter_is_refused_not_dropped(small, tmp_path, capsys, flag, value):
    """A filter given blank would otherwise export the whole ledger to someone who asked for a part."""
    out = tmp_path / "bundle"
    assert main(["--lake", small.uri, "export", "--out", str(out), flag, value]) == 2
    assert flag in _one_error_line(capsys)
    assert not (out / "manifest.json").exists()


def test_errors_name_what_they_are_about(small, tmp_path, capsys):
    assert main(["--lake", small.uri, "dsar", "", "--out", str(tmp_path / "d")]) == 2
    assert _one_error_line(capsys) == "auditlake: dsar needs a subject id"
    meta = tmp_path / "lake" / "auditlake.json"
    meta.chmod(0o644)
    meta.write_text('{"log_id": ')
    assert main(["--lake", small.uri, "hold", "status"]) == 2
    assert f"{meta} is not valid JSON" in _one_error_line(capsys)
    # To verify, the identity file of a lake with tables damaged is a finding (exit 1), named.
    assert main(["--lake", small.uri, "verify", "--no-trust-update"]) == 1
    assert "FINDING identity_changed: auditlake.json, the lake's identity, is no JSON object" in capsys.readouterr().out


def test_an_error_line_is_not_wrapped_twice():
    from auditlake.errors import AuditlakeError
    from auditlake.lake.s3 import error_line

    once = "S3 error checking bucket b: S3 endpoint unreachable (http://127.0.0.1:9): Could not connect"
    assert error_line(AuditlakeError(once)) == once
    assert error_line(OSError('Could not connect to the endpoint URL: "http://127.0.0.1:9/b"')).startswith(
        "S3 endpoint unreachable (http://127.0.0.1:9): ")


@pytest.mark.parametrize("landing", ["nowhere", "notes.txt"])
def test_an_ingest_of_a_wrong_path_makes_no_lake_and_no_keys(landing, tmp_path, capsys, monkeypatch):
    """A mistyped --lake with a wrong landing path leaves nothing behind: no lake identity
    (auditlake.json) and no keystore made up for it."""
    home = tmp_path / "home"
    monkeypatch.setenv("AUDITLAKE_HOME", str(home))
    (tmp_path / "notes.txt").write_text("not landing data")
    assert main(["--lake", str(tmp_path / "typo"), "ingest", str(tmp_path / landing)]) == 2
    assert _one_error_line(capsys)
    assert not (tmp_path / "typo").exists() and not (home / "keystores").exists()


def test_user_mistakes_get_one_line_saying_what_is_wrong(small, tmp_path, capsys):
    keys = tmp_path / "pub.json"
    assert main(["--lake", small.uri, "keys", "export-public", "--out", str(keys)]) == 0
    assert capsys.readouterr().out.startswith("wrote 1 public key(s) of log-")  # the file holds them, not stdout
    assert main(["--lake", small.uri, "verify", "--trusted", str(keys)]) == 2
    assert "is not a checkpoint" in _one_error_line(capsys)
    assert main(["generate", "--events", "100", "--out", str(keys)]) == 2
    assert "is a file: give a folder" in _one_error_line(capsys)
    typed = tmp_path / "typed.json"  # a checkpoint whose fields are of the wrong types
    typed.write_text(json.dumps({"log_id": "x", "tree_size": "5", "root": "a", "chain_head": "b", "time": "t",
                                 "prev_checkpoint_hash": "p", "key_id": "k", "signature": "s"}))
    assert main(["--lake", small.uri, "verify", "--trusted", str(typed)]) == 2
    assert "tree_size of the wrong type" in _one_error_line(capsys)
    for argv in (["--lake", str(keys), "init"], ["--lake", str(keys), "verify"]):
        assert main(argv) == 2
        assert "is a file, not a lake folder" in _one_error_line(capsys)
    for uri in ("s3://", "s3:/bucket/p"):  # not a local folder named "s3:"
        assert main(["--lake", uri, "verify"]) == 2
        assert "not an S3 lake URI" in _one_error_line(capsys)
    assert main(["--lake", small.uri, "dsar", "subj-0", "--out", str(keys)]) == 2
    assert "is a file; choose a new folder" in _one_error_line(capsys)
    # A path the system refuses: its reason and the path, no Python exception names.
    assert main(["--lake", small.uri, "export", "--out", str(keys / "sub")]) == 2
    assert _one_error_line(capsys) == f"auditlake: Not a directory: {keys / 'sub' / 'data'}"
    assert main(["--lake", small.uri, "keys", "export-public", "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == f"auditlake: Is a directory: {tmp_path}"


def test_the_top_level_help_names_the_options_every_command_takes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--lake LAKE" in out and "--json" in out


def test_file_names_cannot_forge_output_lines(small, tmp_path, capsys):
    """A producer's landing file name, or a file planted in the lake, with a newline or a
    terminal escape in it: printed escaped, one line each, never a forged "intact" line."""
    forged = "x\nintact: 6 events, 1 checkpoints\x1b[0m"
    landing = tmp_path / "landing"
    write_jsonl(landing / "a.jsonl", [event(n=50)])
    (landing / f"notes{forged}.txt").write_text("hello")
    assert main(["--lake", small.uri, "ingest", str(landing)]) == 0
    err = capsys.readouterr().err
    assert "ignored " in err and all(not line.startswith("intact") for line in err.splitlines()) and "\x1b" not in err
    planted = Path(small.uri, "tables", "ledger", f"junk{forged}")
    planted.write_text("x")
    assert main(["--lake", small.uri, "verify", "--no-trust-update"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("intact")] == [] and "\x1b" not in "".join(out)
    assert any("junkx\\nintact" in line for line in out), out
    assert main(["--lake", small.uri, "repair"]) == 1  # it cannot remove a file it did not make
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("intact")] == [] and any("junkx\\nintact" in line for line in out), out
    # The offline check of a bundle someone else hands over: its listed paths are theirs.
    planted.unlink()  # (a bundle is cut only from an intact lake)
    bundle = tmp_path / "bundle"
    assert main(["--lake", small.uri, "export", "--out", str(bundle), "--format", "jsonl"]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][0]["path"] = "data/x" + forged
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["--lake", small.uri, "verify-export", str(bundle)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("intact")] == [] and "\x1b" not in "".join(out), out


def test_an_error_with_json_to_a_closed_stdout_is_still_exit_2_and_one_line(tmp_path):
    """`auditlake --json verify | head -0`: the error document cannot be written; the one
    line on stderr and exit 2 stand (not a traceback and exit 1, the contract's "problem found")."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "auditlake.cli", "--lake", str(tmp_path / "nowhere"), "--json", "verify"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()  # before the command writes anything
    err = p.stderr.read()
    assert p.wait(timeout=60) == 2 and err.startswith("auditlake: no lake at") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, said", [
    (["--lake", "s3://bucket/pct%41x", "verify"], "an S3 lake prefix cannot hold '%'"),
    (["generate", "--events", "100", "--out", "s3://bucket/landing"], "generate writes to a local folder"),
])
def test_paths_that_would_land_elsewhere_are_refused(argv, said, tmp_path, capsys, monkeypatch):
    """delta-rs decodes `%` in an S3 prefix and boto3 does not (a lake split across two
    prefixes); `generate` writes local files only (an s3:// --out became a local folder)."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert said in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []
