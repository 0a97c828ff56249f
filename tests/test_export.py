"""Redacted export bundles: formats, filters, profiles, the signed manifest and its offline check."""
import contextlib
import gzip
import os
import re
import json
import shutil

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditlake import export, privacy
from auditlake.cli import main
from auditlake.errors import AuditlakeError
from auditlake.ingest import ingest
from auditlake.ledger import merkle
from auditlake.ledger.canonical import canonical_json
from auditlake.redaction import COLUMNS, load_profile

ALL = ["parquet", "csv", "jsonl"]


def _landing_events(landing):
    """Every parseable event of the generated landing files."""
    out = []
    for p in sorted(landing.iterdir()):
        if p.name.endswith(".parquet"):
            for row in pq.read_table(p).to_pylist():
                ev = dict(row)
                for k in ("actor", "subject"):
                    if isinstance(ev.get(k), str):
                        try:
                            ev[k] = json.loads(ev[k])
                        except ValueError:
                            pass
                out.append(ev)
            continue
        raw = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        for line in raw.splitlines():
            try:
                ev = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(ev, dict):
                out.append(ev)
    return out


_PATTERNS = [
    re.compile(r"\+\d{7,15}"),  # E.164 phones
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),  # e-mail addresses
    re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),  # IPv4
    re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b"),  # IPv6
]


def leaked(text, pii):
    """The PII values of `pii` that occur in `text` (one regex pass per kind, names by words)."""
    found = set()
    for pat in _PATTERNS:
        found.update(m for m in pat.findall(text) if m in pii)
    words = set(re.findall(r"[^\W\d_]+", text))
    for v in pii:
        parts = re.findall(r"[^\W\d_]+", v)
        if " " in v and parts and all(w in words for w in parts) and v in text:
            found.add(v)
    return sorted(found)


def _pii_values(events):
    vals = set()
    for ev in events:
        s = ev.get("subject") if isinstance(ev.get("subject"), dict) else {}
        a = ev.get("actor") if isinstance(ev.get("actor"), dict) else {}
        for v in (s.get("phone"), s.get("email"), s.get("name"), a.get("ip")):
            if isinstance(v, str) and len(v) >= 5:
                vals.add(v)
    return vals


@pytest.fixture(scope="module")
def _gen_lake(generated, tmp_path_factory):
    """The shared generated data ingested once, with its own keystore home."""
    from auditlake.lake.store import Lake

    base = tmp_path_factory.mktemp("export_lake")
    mp = pytest.MonkeyPatch()
    mp.setenv("AUDITLAKE_HOME", str(base / "home"))
    try:
        lake = Lake.open(str(base / "lake"))
        ingest(lake, [str(generated / "landing")])
    finally:
        mp.undo()
    return lake, base / "home"


@pytest.fixture
def glake(_gen_lake, monkeypatch):
    lake, home = _gen_lake
    monkeypatch.setenv("AUDITLAKE_HOME", str(home))
    return lake


def _ledger_rows(lake, size):
    t = lake.delta("ledger").to_pyarrow_dataset().to_table().sort_by("seq")
    return [r for r in t.to_pylist() if r["seq"] < size]


def test_default_export_never_releases_pii_in_any_format(glake, generated, tmp_path):
    pii = _pii_values(_landing_events(generated / "landing"))
    assert len(pii) > 100  # phones, e-mails, names and IPs of the generated people
    out = tmp_path / "bundle"
    m = export.build_export(glake, str(out), ALL, {})
    assert m["rows"] > 2500 and not m["revealed"]
    assert {f["format"] for f in m["files"]} == set(ALL)
    blobs = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # Parquet pages are compressed: scan their decoded values too.
    blobs["parquet-values"] = json.dumps(pq.read_table(out / "data" / "part-00000.parquet").to_pylist()).encode()
    assert leaked(" ".join(sorted(pii)), pii) == sorted(pii)  # the scanner finds every kind of value
    for name, data in blobs.items():
        found = leaked(data.decode("utf-8", errors="replace"), pii)
        assert not found, (name, found[:5])
    rows = [json.loads(x) for x in (out / "data" / "part-00000.jsonl").read_text().splitlines()]
    assert any(r["subject_phone"] == "***" for r in rows)
    assert all(r["subject_phone"] in (None, "***") and r["actor_ip"] in (None, "***") for r in rows)
    assert export.verify_export(str(out))["ok"]


def test_default_export_scrubs_personal_data_producers_put_in_data_and_ids(lake, tmp_path):
    """Beyond the contract's four PII fields, the ledger keeps `data` as written; the default
    export masks what the explorer masks there (PII-named members, PII-shaped text, an
    e-mail used as an actor id), and leaves every other value byte for byte."""
    from events import event, write_jsonl

    personal = ["pat.doe@example.com", "+14155550123", "198.51.100.7", "(415)555-0188", "zoë@exämple.de",
                "+٩٧١ ٥٠ ١٢٣ ٤٥٦٧"]  # (a number in Arabic-Indic digits: RE2's \d is ASCII)
    leaky = event("user.login", n=1, actor={"type": "user", "id": personal[0]},
                  data={"method": "sso", "customer_email": personal[0], "contact": {"phone": personal[1], "ip": personal[2]},
                        "note": f"call back on {personal[3]} or write to {personal[4]}", "campaign_name": "Spring Sale"})
    # Alone in its event, so the number itself must send it to the masker.
    arabic = event("user.login", n=5, actor={"type": "user", "id": "٠٥٠١٢٣٤٥٦٧٨"}, data={"method": "sso", "note": f"or {personal[5]}"})
    plain = event("call.started", n=2)
    # Nothing to mask: byte for byte (an escaped letter stays escaped, an amount an amount).
    odd = event("user.login", n=3, actor={"type": "user", "id": "svc\\u0041dmin"}) | dict(
                event_type="payout.recorded", data={"payout_id": "p-1", "call_id": "c-1", "publisher_id": "pub-1", "amount": "125000.5000",
                      "currency": "USD", "ticket": "CHG-202403-0001", "path": "C:\\u0041pps"})
    mixed = event("user.login", n=4, data={"method": "sso", "ratio": 0.000001, "caller_email": personal[0]})
    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", [leaky, plain, odd, mixed, arabic]))])
    out = tmp_path / "bundle"
    export.build_export(lake, str(out), ALL, {})
    for f in (out / "data").iterdir():
        text = f.read_bytes().decode("utf-8", "replace")
        if f.suffix == ".parquet":
            text = json.dumps(pq.read_table(f).to_pylist(), ensure_ascii=False)
        assert not [v for v in personal if v in text], f.name
    rows = {r["event_id"]: r for r in pq.read_table(out / "data" / "part-00000.parquet").to_pylist()}
    assert rows[leaky["event_id"]]["actor_id"] == rows[arabic["event_id"]]["actor_id"] == "***"
    scrubbed = json.loads(rows[leaky["event_id"]]["data"])
    assert scrubbed["customer_email"] == "***" and scrubbed["contact"] == {"phone": "***", "ip": "***"}
    assert scrubbed["campaign_name"] == "Spring Sale" and scrubbed["method"] == "sso"
    ledger = {r["event_id"]: r for r in lake.delta("ledger").to_pyarrow_dataset().to_table().to_pylist()}
    for e in (plain, odd):
        assert rows[e["event_id"]]["data"] == ledger[e["event_id"]]["data"]
        assert rows[e["event_id"]]["actor_id"] == e["actor"]["id"]
    # Something masked: the rest written canonically, as the ledger keeps it.
    assert rows[mixed["event_id"]]["data"] == ledger[mixed["event_id"]]["data"].replace(f'"{personal[0]}"', '"***"')
    assert export.verify_export(str(out))["ok"]


def test_no_bundle_is_cut_from_a_lake_that_does_not_verify(lake, tmp_path, capsys):
    """A row changed after a clean verify: the export stops with exit 1 (a check found a
    problem) and one line, leaves no rows behind, and logs no export."""
    from events import event, write_jsonl

    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(6)]))])
    assert main(["--lake", lake.uri, "verify"]) == 0
    (f,) = list((tmp_path / "lake" / "tables" / "ledger").rglob("*.parquet"))[:1]
    t = pq.read_table(f)
    os.chmod(f, 0o644)
    pq.write_table(t.set_column(t.schema.get_field_index("tenant_id"), "tenant_id",
                                pa.array(["evil-tenant"] * t.num_rows)), f)
    before = lake.delta("ledger").to_pyarrow_dataset().count_rows()
    capsys.readouterr()
    assert main(["--lake", lake.uri, "export", "--out", str(tmp_path / "b"), "--format", "parquet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not verify" in err and "nothing was exported" in err
    assert not list((tmp_path / "b").rglob("*.parquet")) and not (tmp_path / "b" / "manifest.json").exists()
    assert lake.delta("ledger").to_pyarrow_dataset().count_rows() == before  # no data.exported event


@pytest.mark.parametrize("reason", ["\u200b", "\u200b" * 12, "case 12"])
def test_a_privileged_export_needs_a_reason_that_shows(glake, tmp_path, capsys, reason):
    """As the explorer's reveal: ten visible characters (a zero-width space passed)."""
    assert main(["--lake", glake.uri, "export", "--profile", "privileged", "--reveal-reason", reason,
                 "--out", str(tmp_path / "plain")]) == 2
    assert "--reveal-reason needs at least 10 visible characters" in capsys.readouterr().err
    assert not (tmp_path / "plain").exists()


def test_bundle_rows_manifest_and_root(glake, tmp_path):
    out = tmp_path / "b"
    m = export.build_export(glake, str(out), ALL, {})
    cp = m["source_checkpoint"]
    ledger = _ledger_rows(glake, cp["tree_size"])
    assert m["rows"] == len(ledger)  # no filter: every event of the source checkpoint
    assert m["columns"] == sorted(m["columns"]) and set(m["columns"]) <= set(COLUMNS)
    lines = (out / "data" / "part-00000.jsonl").read_text().splitlines()
    objs = [json.loads(x) for x in lines]
    # Each JSONL line is the canonical JSON of its row; the root is RFC 6962 over them.
    assert all(canonical_json(o).decode() == x for o, x in zip(objs, lines))
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(x.encode()) for x in lines])
    assert m["merkle"]["root"] == root.hex()
    assert [o["event_id"] for o in objs] == [r["event_id"] for r in ledger]
    # The same rows in every format.
    pt = pq.read_table(out / "data" / "part-00000.parquet").to_pylist()
    assert pt == objs
    import pyarrow.csv as pcsv

    ct = pcsv.read_csv(out / "data" / "part-00000.csv", convert_options=pcsv.ConvertOptions(
        column_types={c: (pa.int64() if c == "seq" else pa.string()) for c in m["columns"]},
        strings_can_be_null=True, quoted_strings_can_be_null=False)).to_pylist()
    assert ct == objs
    # Manifest: files with hashes and counts, filters, source checkpoint, signature, key.
    for f in m["files"]:
        assert f["rows"] == len(objs) and len(f["sha256"]) == 64
    assert m["key_id"] and m["public_key"] and m["signature"]
    assert m["filters"] == {"from": None, "to": None, "event_types": [], "tenants": [], "subjects": []}
    assert json.loads((out / "manifest.json").read_text()) == m
    # The export is an audit event.
    audit = [r for r in glake.delta("ledger").to_pyarrow_dataset().to_table().to_pylist()
             if r["event_id"] == m["audit_event_id"]]
    assert audit and audit[0]["event_type"] == "data.exported"
    assert json.loads(audit[0]["data"])["export_id"] == m["export_id"]


def test_filters(glake, tmp_path):
    from auditlake.proofs import latest_checkpoint

    cp_size = latest_checkpoint(glake)["tree_size"]
    ledger = _ledger_rows(glake, cp_size)
    tenant = ledger[0]["tenant_id"]
    subject = next(r["subject_id"] for r in ledger if r["subject_id"])
    types = ["call.started", "consent.granted"]
    lo, hi = "2026-03-01T00:00:00Z", "2026-03-05T12:00:00Z"
    from auditlake.contract import parse_instant

    cases = [
        ({"event_types": types}, lambda r: r["event_type"] in types),
        ({"tenants": [tenant]}, lambda r: r["tenant_id"] == tenant),
        ({"subjects": [subject]}, lambda r: r["subject_id"] == subject),
        ({"from": lo, "to": hi}, lambda r: parse_instant(lo) <= r["occurred_at"] < parse_instant(hi)),
        ({"from": lo, "event_types": types, "tenants": [tenant]},
         lambda r: r["occurred_at"] >= parse_instant(lo) and r["event_type"] in types and r["tenant_id"] == tenant),
    ]
    from auditlake.lake.meta import open_lake_keys

    keys = open_lake_keys(glake)
    prof = load_profile("default")
    for flt, pred in cases:
        df = export.read_rows(glake, export.normalise_filters(flt), cp_size, prof, keys)
        got = df.get_column("event_id").to_list()
        want = [r["event_id"] for r in ledger if pred(r)]
        assert got == want and want, flt
    out = tmp_path / "f"
    flt, pred = cases[-1]
    m = export.build_export(glake, str(out), ["jsonl"], flt)
    got = [json.loads(x)["event_id"] for x in (out / "data" / "part-00000.jsonl").read_text().splitlines()]
    assert got == [r["event_id"] for r in ledger if pred(r)]
    assert m["filters"]["tenants"] == [tenant] and m["filters"]["event_types"] == types and m["filters"]["from"] == lo
    assert export.verify_export(str(out))["ok"]
    # The CLI takes the same filters; bad ones are usage errors.
    out = tmp_path / "cli"
    assert main(["--lake", glake.uri, "export", "--format", "csv", "--out", str(out), "--event-type", "call.started",
                 "--tenant", tenant, "--from", lo]) == 0
    assert main(["--lake", glake.uri, "export", "--out", str(tmp_path / "x1"), "--event-type", "call.teleported"]) == 2
    assert main(["--lake", glake.uri, "export", "--out", str(tmp_path / "x2"), "--from", "yesterday"]) == 2
    assert main(["--lake", glake.uri, "export", "--out", str(tmp_path / "x3"), "--format", "xml"]) == 2
    # A subject id that looks like an injection is only ever a value.
    df = export.read_rows(glake, export.normalise_filters({"subjects": ["x' OR '1'='1"]}), cp_size, prof, keys)
    assert df.height == 0


def _bundle(glake, tmp_path, name="b"):
    out = tmp_path / name
    export.build_export(glake, str(out), ALL, {"event_types": ["call.started", "call.completed"]})
    return out


def _tamper_cases():
    def edit_jsonl(out):
        p = out / "data" / "part-00000.jsonl"
        lines = p.read_text().splitlines()
        o = json.loads(lines[3])
        o["tenant_id"] = "someone-else"
        lines[3] = canonical_json(o).decode()
        p.write_text("\n".join(lines) + "\n")

    def edit_csv(out):
        p = out / "data" / "part-00000.csv"
        lines = p.read_text().splitlines()
        lines[5] = lines[5].replace("call.", "call_", 1)
        p.write_text("\n".join(lines) + "\n")

    def edit_parquet(out):
        p = out / "data" / "part-00000.parquet"
        t = pq.read_table(p).to_pylist()
        t[2]["event_type"] = "call.completed" if t[2]["event_type"] != "call.completed" else "call.started"
        pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(p)), p)

    def add_row(out):
        p = out / "data" / "part-00000.jsonl"
        lines = p.read_text().splitlines()
        p.write_text("\n".join(lines + [lines[0]]) + "\n")

    def remove_row(out):
        p = out / "data" / "part-00000.jsonl"
        lines = p.read_text().splitlines()
        p.write_text("\n".join(lines[:4] + lines[5:]) + "\n")

    def remove_parquet_row(out):
        p = out / "data" / "part-00000.parquet"
        t = pq.read_table(p)
        pq.write_table(t.slice(1), p)

    def break_utf8(out):
        p = out / "data" / "part-00000.jsonl"
        raw = bytearray(p.read_bytes())
        raw[raw.index(b"call.")] = 0xFF
        p.write_bytes(bytes(raw))

    def add_file(out):
        shutil.copy(out / "data" / "part-00000.csv", out / "data" / "part-00001.csv")

    def remove_file(out):
        (out / "data" / "part-00000.parquet").unlink()

    def edit_manifest(out):
        m = json.loads((out / "manifest.json").read_text())
        m["rows"] += 1
        (out / "manifest.json").write_text(json.dumps(m))

    def odd_columns(out):
        m = json.loads((out / "manifest.json").read_text())
        m["columns"] = [1, None, "seq", "seq"]
        (out / "manifest.json").write_text(json.dumps(m))

    def rehash_manifest(out):
        # Edit a row and fix up its file's hash in the manifest: the signature catches it.
        edit_jsonl(out)
        m = json.loads((out / "manifest.json").read_text())
        for f in m["files"]:
            if f["format"] == "jsonl":
                f["sha256"], f["bytes"] = export._sha256_file(out / f["path"])
        (out / "manifest.json").write_text(json.dumps(m))

    def repeated_key(out):
        # A key given twice: this parser takes the last value, which the signature covers;
        # another parser takes the first.
        text = (out / "manifest.json").read_text()
        (out / "manifest.json").write_text(text.replace("{", '{\n  "rows": 999999,', 1))

    def edit_manifest_field(field, value):
        def edit(out):
            m = json.loads((out / "manifest.json").read_text())
            if field == "files.format":
                m["files"][0]["format"] = value
            else:
                m[field] = value
            (out / "manifest.json").write_text(json.dumps(m))
        edit.__name__ = f"manifest_{field}_{type(value).__name__}"
        return edit

    def deeply_nested_manifest(out):
        (out / "manifest.json").write_text('{"format": ' + "[" * 100_000 + "]" * 100_000 + "}")

    def manifest_is_a_folder(out):
        (out / "manifest.json").unlink()
        (out / "manifest.json").mkdir()

    def odd_entries(out):
        import os

        (out / "data" / "etc").symlink_to("/etc")
        os.mkfifo(out / "data" / "pipe")
        (out / "empty").mkdir()

    def swapped_for_a_bigger_file(out):
        # Never parsed: its size already differs from the manifest's.
        m = json.loads((out / "manifest.json").read_text())
        target = next(f for f in m["files"] if f["format"] == "jsonl")["path"]
        (out / target).write_text("{}\n" * 200_000)

    return [edit_jsonl, edit_csv, edit_parquet, add_row, remove_row, remove_parquet_row, break_utf8, add_file,
            remove_file, edit_manifest, odd_columns, rehash_manifest, repeated_key,
            edit_manifest_field("files.format", ["jsonl"]), edit_manifest_field("files.format", {"a": 1}),
            edit_manifest_field("merkle", "x"), edit_manifest_field("files", {"a": 1}),
            edit_manifest_field("source_checkpoint", {"tree_size": "x"}), deeply_nested_manifest,
            manifest_is_a_folder, odd_entries, swapped_for_a_bigger_file]


def test_verify_export_catches_every_tampering(glake, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUDITLAKE_LAKE", glake.uri)  # its keys are pinned
    clean = _bundle(glake, tmp_path, "clean")
    assert main(["verify-export", str(clean)]) == 0
    assert "intact" in capsys.readouterr().out
    for i, tamper in enumerate(_tamper_cases()):
        out = tmp_path / f"t{i}"
        shutil.copytree(clean, out)
        tamper(out)
        res = export.verify_export(str(out))
        assert not res["ok"] and res["problems"], tamper.__name__
        assert main(["verify-export", str(out)]) == 1, tamper.__name__
        assert "PROBLEM" in capsys.readouterr().out
    # A folder that is not there is a usage error; a bundle whose manifest is gone or broken
    # is a damaged bundle like any other.
    assert main(["verify-export", str(tmp_path / "nothing-here")]) == 2
    broken = tmp_path / "broken"
    shutil.copytree(clean, broken)
    (broken / "manifest.json").write_text("{")
    assert main(["verify-export", str(broken)]) == 1
    (broken / "manifest.json").unlink()
    assert main(["verify-export", str(broken)]) == 1
    assert "has no manifest.json" in capsys.readouterr().out


def test_jsonl_lines_are_cut_as_the_text_splits():
    for text in ["", "a\n", "a\n\nb\n", '{"x":"\u00e9"}\n{"y":"\\u0000 \u2028"}\n']:
        assert export._jsonl_lines(text.encode()).to_pylist() == text.split("\n")[:-1]
    with pytest.raises(pa.ArrowInvalid):
        export._jsonl_lines(b"{}\n\xff\n")


def test_verify_export_pins_the_public_key(glake, tmp_path, capsys, monkeypatch):
    out = _bundle(glake, tmp_path)
    keyfile = tmp_path / "pub.json"
    assert main(["--lake", glake.uri, "keys", "export-public", "--out", str(keyfile)]) == 0
    capsys.readouterr()
    assert main(["verify-export", str(out), "--public-key", str(keyfile)]) == 0
    assert "pinned" in capsys.readouterr().out
    # Without a key to pin (no --public-key, no lake here) the check refuses: the bundle's own
    # key proves nothing about who made it.
    assert main(["verify-export", str(out)]) == 2
    assert "--public-key" in capsys.readouterr().err
    # A bundle re-signed by someone else's key passes only its own check, not a pinned one.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from auditlake.keys import public_key_b64, signing_key_id

    evil = Ed25519PrivateKey.generate()
    m = json.loads((out / "manifest.json").read_text())
    m.pop("signature")
    m["rows"] = m["rows"]
    kid = signing_key_id(evil.public_key())
    m["key_id"], m["public_key"] = kid, public_key_b64(evil.public_key())
    m["public_keys"] = {**m["public_keys"], kid: m["public_key"]}
    import base64

    m["signature"] = base64.b64encode(evil.sign(canonical_json(m))).decode()
    (out / "manifest.json").write_text(json.dumps(m))
    assert export.verify_export(str(out))["ok"]
    assert main(["verify-export", str(out), "--public-key", str(keyfile)]) == 1
    # Nor is the bundle's own manifest a key file: pinned, it would vouch for itself.
    capsys.readouterr()
    assert main(["verify-export", str(out), "--public-key", str(out / "manifest.json")]) == 2
    assert "is a signed document (a proof or an export manifest), not a key file" in capsys.readouterr().err
    # A key file with no keys pins nothing: refused, never read as "not pinned".
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"log_id": "x", "public_keys": {}}))
    capsys.readouterr()
    assert main(["verify-export", str(out), "--public-key", str(empty)]) == 2
    assert "public_keys are empty" in capsys.readouterr().err
    assert not export.verify_export(str(out), {})["ok"]
    assert main(["--lake", glake.uri, "verify-export", str(out)]) == 1  # a named lake pins its keys
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "lake").symlink_to(glake.uri)
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["verify-export", str(out)]) == 1  # and so does the default ./lake
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUDITLAKE_LAKE", glake.uri)
    assert main(["verify-export", str(out)]) == 1
    # A lake whose keystore is not here: said so, and no keys are made up to check with.
    home = tmp_path / "empty-home"
    monkeypatch.setenv("AUDITLAKE_HOME", str(home))
    assert main(["verify-export", str(out)]) == 2
    assert "no keystore" in capsys.readouterr().err and not (home / "keystores").exists()


def test_profiles_from_a_toml_file(glake, tmp_path, generated):
    prof = tmp_path / "profiles.toml"
    prof.write_text("""
[profiles.partner]
description = "partner hand-off"
default_action = "keep"
hash_salt = "profile"
[profiles.partner.fields]
"subject.id" = "hash"
"actor.id" = "mask"
"subject.phone" = "hash"
data = "drop"
source = "drop"

[profiles.leaky]
[profiles.leaky.fields]
"subject.email" = "keep"
""")
    m = export.build_export(glake, str(tmp_path / "p"), ["jsonl", "parquet"], {}, profile="partner", profiles_file=str(prof))
    rows = [json.loads(x) for x in (tmp_path / "p" / "data" / "part-00000.jsonl").read_text().splitlines()]
    assert "data" not in rows[0] and "source" not in rows[0]
    assert m["profile"]["fields"]["data"] == "drop"
    assert all(r["actor_id"] == "***" for r in rows)
    hashed = [r["subject_id"] for r in rows if r["subject_id"]]
    assert hashed and all(h.startswith("h1.") and len(h) == 67 for h in hashed)
    assert any(r["subject_phone"] and r["subject_phone"].startswith("h1.") for r in rows)
    assert all(r["subject_email"] in (None, "***") for r in rows)  # unlisted PII stays masked
    # Hashes are stable for a "profile" salt, and join the same subject.
    m2 = export.build_export(glake, str(tmp_path / "p2"), ["jsonl"], {}, profile="partner", profiles_file=str(prof))
    rows2 = [json.loads(x) for x in (tmp_path / "p2" / "data" / "part-00000.jsonl").read_text().splitlines()]
    assert [r["subject_id"] for r in rows2][: len(rows)] == [r["subject_id"] for r in rows]
    pii = _pii_values(_landing_events(generated / "landing"))
    text = (tmp_path / "p" / "data" / "part-00000.jsonl").read_text()
    assert not leaked(text, pii)
    assert export.verify_export(str(tmp_path / "p"))["ok"] and m2["rows"] == m["rows"] + 1  # + the first export's event
    # Keeping PII without a reason is refused; bad profiles are refused.
    with pytest.raises(AuditlakeError, match="reveal-reason"):
        export.build_export(glake, str(tmp_path / "l"), ["jsonl"], {}, profile="leaky", profiles_file=str(prof))
    bad = tmp_path / "bad.toml"
    for body, msg in [("[profiles.x.fields]\n'subject.shoe' = 'keep'\n", "unknown field"),
                      ("[profiles.x.fields]\n'subject.id' = 'shred'\n", "not one of"),
                      ("[profiles.x.fields]\nseq = 'hash'\n", "kept or dropped"),
                      ("not toml [", "TOML")]:
        bad.write_text(body)
        with pytest.raises(AuditlakeError, match=msg):
            load_profile("x", str(bad))
    with pytest.raises(AuditlakeError, match="no redaction profile"):
        load_profile("nope")


def test_privileged_export_reveals_pii_with_a_logged_reason(glake, generated, tmp_path):
    out = tmp_path / "priv"
    flt = {"event_types": ["consent.granted"]}
    assert main(["--lake", glake.uri, "export", "--format", "jsonl", "--out", str(out), "--event-type", "consent.granted",
                 "--profile", "privileged"]) == 2  # no reason: refused
    assert not out.exists() or not any(out.iterdir())
    m = export.build_export(glake, str(out), ["jsonl"], flt, reveal_reason="FTC subpoena 2026-044", actor="carol")
    assert m["revealed"] and m["reveal_reason"] == "FTC subpoena 2026-044"
    rows = [json.loads(x) for x in (out / "data" / "part-00000.jsonl").read_text().splitlines()]
    events = {e["event_id"]: e for e in _landing_events(generated / "landing")}
    checked = 0
    for r in rows:
        ev = events.get(r["event_id"])
        if ev and isinstance(ev.get("subject"), dict) and ev["subject"].get("phone"):
            assert r["subject_phone"] == ev["subject"]["phone"]
            checked += 1
    assert checked > 10
    audit = [r for r in glake.delta("ledger").to_pyarrow_dataset().to_table().to_pylist()
             if r["event_id"] == m["audit_event_id"]][0]
    data = json.loads(audit["data"])
    assert data["revealed"] is True and data["reason"] == "FTC subpoena 2026-044" and audit["actor_id"] == "carol"


def test_export_after_erasure_reads_erased(lake, tmp_path):
    from events import event, write_jsonl

    write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(30)])
    ingest(lake, [str(tmp_path / "in")])
    privacy.erase(lake, "subj-2")
    export.build_export(lake, str(tmp_path / "d"), ["jsonl"], {})
    m = export.build_export(lake, str(tmp_path / "r"), ["jsonl"], {}, profile="privileged",
                            reveal_reason="audit for jane.roe@example.com, +1 312 555 0199")
    # The reason is kept in the signed manifest and the audit event: PII-shaped text masked.
    assert m["reveal_reason"] == "audit for ***, ***"
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["reveal_reason"] == "audit for ***, ***"
    for name in ("d", "r"):
        rows = [json.loads(x) for x in (tmp_path / name / "data" / "part-00000.jsonl").read_text().splitlines()]
        mine = [r for r in rows if r["subject_id"] == "subj-2" and r["source"] != "auditlake"]
        assert mine and all(r["subject_phone"] == r["subject_email"] == privacy.ERASED for r in mine)
        others = [r for r in rows if r["subject_id"] == "subj-1" and r["source"] != "auditlake"]
        assert others and all(r["subject_phone"] != privacy.ERASED for r in others)
    text = (tmp_path / "r" / "data" / "part-00000.jsonl").read_text()
    assert "person2@example.com" not in text and "person9@example.com" not in text  # subj-2: n = 2, 9, 16...
    assert "person8@example.com" in text  # subj-1, revealed


def test_row_json_and_its_leaf_hashes_are_rfc8785():
    """The C encoder writes each row as the reference RFC 8785 implementation does (every
    control character, quotes, backslashes, non-ASCII text, nulls, integers at the edges of
    JSON's exact range, rows longer than the hasher's first buffer), from polars frames and
    from arrow tables (sliced, chunked, string views); the fused hasher hashes exactly that
    text."""
    import hashlib

    import polars as pl

    nasty = ["a\"b\\c", "tab\tnl\ncr\r\x01\x1f\x7f", "/", "é中文😀", "", None, "\u2028\u2029", "\x08\x0c",
             "".join(map(chr, range(32))), "\\u0041", '{"k":"v"}', "x" * 300, "\"" * 5000 + "é" * 17]
    cols = {c: [nasty[(i + j) % len(nasty)] for i in range(40)] for j, c in enumerate(COLUMNS) if c != "seq"}
    cols["seq"] = [0, 1, -1, 2**53 - 1, -(2**53 - 1)] + list(range(5, 40))  # JSON's exact range
    want = [canonical_json({c: cols[c][i] for c in COLUMNS}).decode() for i in range(40)]
    digests = [hashlib.sha256(b"\x00" + w.encode()).digest() for w in want]

    def check(rows, lo=0, hi=40):
        assert export.row_json(rows).to_pylist() == want[lo:hi]
        assert export.row_leaf_hashes(rows) == b"".join(digests[lo:hi])

    check(pl.DataFrame({c: cols[c] for c in COLUMNS}, schema={c: (pl.Int64 if c == "seq" else pl.String) for c in COLUMNS}))
    table = pa.table({c: pa.array(cols[c], pa.int64() if c == "seq" else pa.string()) for c in COLUMNS})
    check(table.slice(7, 20), 7, 27)
    check(pa.concat_tables([table.slice(0, 13), table.slice(13)]))
    check(pa.table({c: (table[c].cast(pa.string_view()) if c != "seq" else table[c]) for c in COLUMNS}))
    check(table.slice(0, 0), 0, 0)
    extremes = [-2**63, 2**63 - 1, -10, 10, 9, -9, 0]
    assert export.row_json(pa.table({"seq": pa.array(extremes, pa.int64())})).to_pylist() == \
        [f'{{"seq":{v}}}' for v in extremes]
    for bad in (pa.table({"seq": pa.array([1.5])}), pa.table({"a": pa.array([b"x"])})):
        with pytest.raises(AuditlakeError, match="not a string or an integer"):
            export.row_leaf_hashes(bad)


def test_instants_are_written_as_polars_strftime_writes_them():
    """The C formatter of exported instants spells each one as polars' strftime with the
    export's format: the epoch and either side of it, leap days, the ends of years 0000 and
    9999, chunked and sliced columns, NULLs; a year that form cannot spell is left to polars."""
    import random

    import polars as pl

    rnd = random.Random(3)
    edges = [0, -1, 1, 86_399_999_999, -86_400_000_000, 951_782_400_000_000, 4_107_542_400_000_000,
             253_402_300_799_999_999, -62_167_219_200_000_000, -62_135_596_800_000_000, None]
    values = edges + [rnd.randrange(-62_167_219_200_000_000, 253_402_300_800_000_000) for _ in range(5000)]
    col = pa.chunked_array([pa.array(values[:7], pa.timestamp("us", "UTC")),
                            pa.array(values[7:], pa.timestamp("us", "UTC"))]).slice(1)
    table = export._arrow(pl.DataFrame({"occurred_at": col, "seq": range(len(col))}))
    want = pl.from_arrow(col).dt.strftime(export._TS_FORMAT).to_list()
    assert table.column("occurred_at").to_pylist() == want
    assert want[:3] == ["1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00.000001Z", "1970-01-01T23:59:59.999999Z"]
    assert table.column("occurred_at").null_count == 1
    sliced = pl.DataFrame({"occurred_at": pa.array(values, pa.timestamp("us", "UTC"))}).slice(3)  # arrow offset 3
    assert export._arrow(sliced).column("occurred_at").to_pylist() == \
        sliced.get_column("occurred_at").dt.strftime(export._TS_FORMAT).to_list()
    before_year_0 = pl.DataFrame({"occurred_at": pa.array([0, -62_167_219_200_000_001], pa.timestamp("us", "UTC"))})
    assert export._arrow(before_year_0).column("occurred_at").to_pylist() == \
        before_year_0.get_column("occurred_at").dt.strftime(export._TS_FORMAT).to_list()


def test_leaf_hashes_sixteen_rows_at_a_time_are_sha256():
    """The AVX-512 hasher (16 rows at once, where the CPU has it) and the one-row-at-a-time
    path give hashlib's digests for rows of every length across SHA-256's block and padding
    boundaries, in whole groups of 16 and a remainder, long rows among short ones."""
    import hashlib

    from auditlake import _records

    texts = ["x" * k for k in range(300)] + ["é" * 5000, "", "y" * 70_000] + ['"\\\n' * 40] * 20
    table = pa.table({"a": pa.array(texts), "seq": pa.array(range(len(texts)), pa.int64())})
    want = b"".join(hashlib.sha256(b"\x00" + canonical_json({"a": t, "seq": i})).digest() for i, t in enumerate(texts))
    had = _records.simd()
    try:
        for enabled in (True, False):
            assert _records.simd(enabled) == (enabled and had)
            assert export.row_leaf_hashes(table) == want
            assert export.row_leaf_hashes(table.slice(5, 37)) == want[5 * 32:42 * 32]
    finally:
        _records.simd(had)


def test_frames_merge_batches_up_to_a_twelfth_of_the_export(lake, tmp_path, monkeypatch):
    """Part files follow the frames: batches (files whose seq ranges overlap) are merged up
    to the frame size, which is at most a twelfth of the export (down to SMALL_FRAME_ROWS)
    and at most FRAME_ROWS; rows stay in seq order across parts and the bundle verifies."""
    from events import event, write_jsonl

    day = "2026-03-01T14:00:00.000Z"  # one file per batch
    for b in range(3):
        ingest(lake, [str(write_jsonl(tmp_path / f"in{b}" / "a.jsonl",
                                      [event(n=10 * b + i, occurred_at=day) for i in range(10)]))])

    def parts(name):  # each export adds its own one-row batch (its audit event)
        m = export.build_export(lake, str(tmp_path / name), ["jsonl"], {})
        seqs = [json.loads(line)["seq"] for f in m["files"] for line in (tmp_path / name / f["path"]).read_text().splitlines()]
        assert seqs == sorted(seqs) and len(seqs) == m["rows"]
        assert [f["first_row"] for f in m["files"]] == [sum(g["rows"] for g in m["files"][:i]) for i in range(len(m["files"]))]
        assert export.verify_export(str(tmp_path / name))["ok"]
        return [f["rows"] for f in m["files"]]

    assert parts("small") == [30]  # under SMALL_FRAME_ROWS: one frame
    monkeypatch.setattr(export, "SMALL_FRAME_ROWS", 1)
    assert parts("twelfths") == [10, 10, 10, 1]  # a twelfth of 31 rows is 2: no batches merged
    monkeypatch.setattr(export, "_MIN_FRAMES", 1)
    monkeypatch.setattr(export, "FRAME_ROWS", 20)
    assert parts("capped") == [20, 12]


def test_no_command_writes_its_output_into_the_lakes_own_data(lake, tmp_path, capsys):
    """A bundle, a subject access export, a proof, a key file or a catalog aimed at the lake's
    tables, retention manifests, landing folder, audit events, holds or identity file is
    refused (exit 2) and the lake still verifies; elsewhere in the lake folder is free, but
    for output with plain personal data (a subject access folder, a privileged export),
    which an erasure could not reach there."""
    from auditlake.verify import verify
    from events import event, write_jsonl

    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", [event(n=i) for i in range(5)]))])
    root = lake.uri
    event_id = event(n=1)["event_id"]
    inside = [f"{root}/tables/ledger/event_date=2099-01-01", f"{root}/tables/ledger/_delta_log/sub",
              f"{root}/_retention/x", f"{root}/landing/bundle", f"{root}/_audit/2026-01-01/x.jsonl",
              f"{root}/_holds/x", f"{root}/auditlake.json"]
    for target in inside:
        assert main(["--lake", root, "export", "--format", "parquet", "--out", target]) == 2, target
        assert main(["--lake", root, "dsar", "subj-1", "--out", target]) == 2, target
        assert main(["--lake", root, "prove", event_id, "--out", target]) == 2, target
        assert main(["--lake", root, "keys", "export-public", "--out", target]) == 2, target
        assert main(["--lake", root, "catalog", "--db", target]) == 2, target
    assert "inside the lake's own" in capsys.readouterr().err
    (tmp_path / "link").symlink_to(f"{root}/tables")  # a link into the lake is followed
    assert main(["--lake", root, "export", "--out", str(tmp_path / "link" / "ledger" / "x")]) == 2
    assert main(["--lake", root, "prove", event_id, "--out", f"{root}/proof.json"]) == 0
    assert main(["--lake", root, "export", "--format", "jsonl", "--out", f"{root}/exports/one"]) == 0
    capsys.readouterr()
    assert main(["--lake", root, "dsar", "subj-1", "--out", f"{root}/dsar"]) == 2
    assert main(["--lake", root, "export", "--profile", "privileged", "--reveal-reason", "case 12-2026",
                 "--out", f"{root}/exports/plain"]) == 2
    assert capsys.readouterr().err.count("holds personal data in plain text") == 2
    with contextlib.chdir(root):  # a literal "~" (quoted in a shell) is a folder here, as the writer takes it
        assert main(["--lake", root, "dsar", "subj-1", "--out", "~/x"]) == 2
    assert not os.path.exists(f"{root}/~")
    assert not os.path.exists(f"{root}/dsar") and not os.path.exists(f"{root}/exports/plain")
    report = verify(lake, update_trust=False)
    assert report.ok, report.findings


def test_a_csv_bundle_keeps_values_that_look_like_null(lake, tmp_path):
    """NA is Namibia and "N/A" a role: only an unquoted empty field is null when the checker
    reads the CSV back, so a clean bundle verifies."""
    from events import event, write_jsonl

    odd = [event(n=i) for i in range(4)]
    odd[0]["subject"]["country"] = "NA"
    odd[1]["actor"]["role"] = "N/A"
    odd[2]["actor"]["role"] = "null"
    odd[3]["actor"]["role"] = ""
    ingest(lake, [str(write_jsonl(tmp_path / "in" / "a.jsonl", odd))])
    m = export.build_export(lake, str(tmp_path / "csv"), ["csv"], {})
    assert m["rows"] >= 4
    res = export.verify_export(str(tmp_path / "csv"))
    assert res["ok"], res["problems"]
