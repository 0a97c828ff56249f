"""The generator: realistic landing files, planted boundary cases and exact ground truth.

The landing files are read back with an independent stand-in for ingest
(tests/landing_frame.py), and the vectorised rule engine must reproduce the ground
truth, which the generator computed with the row-by-row oracle.
"""
from __future__ import annotations

import gzip
import re
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the test helper lives beside this file
from landing_frame import REQUIRED_DATA, frame, parse_instant, read_landing  # noqa: E402

from auditlake.compliance import rules  # noqa: E402
from auditlake import generate as generate_module  # noqa: E402
from auditlake.generate import generate  # noqa: E402

N = 4000


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Three seeds, generated once for the module: {seed: (dir, truth, accepted, quarantine, rejects)}."""
    out = {}
    for seed in (0, 1, 7):
        d = tmp_path_factory.mktemp(f"seed{seed}")
        generate(d, N, seed=seed)
        truth = orjson.loads((d / "ground_truth.json").read_bytes())
        rejects: list = []
        accepted, quarantine = read_landing(d / "landing", rejects)
        out[seed] = (d, truth, accepted, quarantine, rejects)
    return out


def _all_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_arguments_give_byte_identical_output(tmp_path, datasets):
    generate(tmp_path, N, seed=0)
    assert _all_bytes(tmp_path) == _all_bytes(datasets[0][0])
    # and another seed gives other data
    assert _all_bytes(datasets[1][0]) != _all_bytes(datasets[0][0])


def test_rerun_replaces_the_landing_files(tmp_path):
    generate(tmp_path, 3000, seed=3)
    first = _all_bytes(tmp_path)
    generate(tmp_path, 3000, seed=4)
    generate(tmp_path, 3000, seed=3)
    assert _all_bytes(tmp_path) == first


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_engine_reproduces_ground_truth_exactly(datasets, seed):
    _d, truth, accepted, _q, _r = datasets[seed]
    out = rules.evaluate(frame(accepted))
    got = set(zip(out["rule_id"], out["event_id"]))
    want = {(f["rule_id"], f["event_id"]) for f in truth["findings"]}
    for rule in rules.RULE_IDS:
        g = {e for r, e in got if r == rule}
        w = {e for r, e in want if r == rule}
        assert w, f"{rule}: no findings in the ground truth"
        tp = len(g & w)
        precision, recall = (tp / len(g) if g else 0.0), tp / len(w)
        assert (precision, recall) == (1.0, 1.0), f"{rule}: precision {precision}, recall {recall}"
    assert got == want
    # ground truth lists findings in the engine's order
    assert [(f["rule_id"], f["event_id"]) for f in truth["findings"]] == list(zip(out["rule_id"], out["event_id"]))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_ground_truth_header(datasets, seed):
    d, truth, accepted, quarantine, _r = datasets[seed]
    assert truth["seed"] == seed
    assert truth["events"] == N == sum(q["lines"] for q in quarantine.values())
    assert truth["accepted"] == len(accepted)
    latest = max(parse_instant(e["occurred_at"]) for e in accepted)
    assert parse_instant(truth["as_of"]) == latest
    assert truth["as_of"].endswith("Z")


def test_every_planted_case_gets_its_verdict(datasets):
    for _d, truth, accepted, _q, _r in datasets.values():
        found = {(f["rule_id"], f["event_id"]) for f in truth["findings"]}
        ids = {e["event_id"] for e in accepted}
        for case in truth["planted"]:
            assert case["event_id"] in ids, f"planted event not accepted: {case}"
            assert ((case["rule_id"], case["event_id"]) in found) == case["flagged"], case


def test_planted_events_carry_no_finding_they_do_not_list(datasets):
    for _d, truth, _a, _q, _r in datasets.values():
        listed = {c["event_id"] for c in truth["planted"]}
        expected = {(c["rule_id"], c["event_id"]) for c in truth["planted"] if c["flagged"]}
        found = {(f["rule_id"], f["event_id"]) for f in truth["findings"] if f["event_id"] in listed}
        assert found == expected


def test_every_rule_has_planted_findings_and_boundary_non_findings(datasets):
    planted = datasets[0][1]["planted"]
    for rule in rules.RULE_IDS:
        verdicts = Counter(c["flagged"] for c in planted if c["rule_id"] == rule)
        assert verdicts[True] >= 1 and verdicts[False] >= 1, rule
    cases = " | ".join(c["case"] for c in planted)
    for needle in ("07:59:59", "08:00:00", "20:59:59", "21:00:00", "DST switch day", "no time zone",
                   "unknown zone name", "exactly 10 business days", "10 business days + 1 s",
                   "15 business days + 1 s", "exactly 15 business days", "+ 1 month", "extended 1 s before",
                   "extended exactly at the first deadline", "opt-out", "one instant", "national DNC, never consented",
                   "national DNC with consent", "self-approved", "no payout.recorded", "no change_ticket",
                   "no approved_by", "IN via adequacy", "via none", "null basis", "empty basis",
                   "GB is not in the EEA", "lacking country/region", "deadline == as_of"):
        assert needle in cases, needle


def test_jan31_plus_one_month_is_planted(datasets):
    # With the default start the month-end case is received on 31 January.
    planted = datasets[0][1]["planted"]
    assert any("received 31 Jan" in c["case"] and "28 Feb" in c["case"] for c in planted)


def test_all_twenty_event_types_present(datasets):
    for _d, _t, accepted, _q, _r in datasets.values():
        assert {e["event_type"] for e in accepted} == set(REQUIRED_DATA)


def test_tiny_request_still_writes_every_planted_case(tmp_path):
    summary = generate(tmp_path, 10, seed=5)
    truth = orjson.loads((tmp_path / "ground_truth.json").read_bytes())
    accepted, quarantine = read_landing(tmp_path / "landing")
    assert summary["events"] == truth["events"] > 10
    assert {e["event_type"] for e in accepted} == set(REQUIRED_DATA)
    assert quarantine == truth["quarantine"]
    out = rules.evaluate(frame(accepted))
    assert set(zip(out["rule_id"], out["event_id"])) == {(f["rule_id"], f["event_id"]) for f in truth["findings"]}


# ------------------------------------------------------------------ malformed input

def test_quarantine_counts_match_an_independent_reader(datasets):
    for _d, truth, _a, quarantine, rejects in datasets.values():
        assert quarantine == truth["quarantine"]
        assert sorted(rejects) == sorted((m["file"], m["line"]) for m in truth["malformed"])
        bad = sum(q["bad"] for q in quarantine.values())
        assert 0.003 * N <= bad <= 0.008 * N


def test_every_kind_of_malformed_line_is_there(datasets):
    d, truth, _a, _q, _r = datasets[0]
    kinds = Counter(m["kind"] for m in truth["malformed"])
    assert set(kinds) == {"not_json", "missing_field", "wrong_type", "unknown_type", "bad_uuid",
                          "bad_timestamp", "oversize", "replay"}
    assert any(m["file"].endswith(".parquet") for m in truth["malformed"])
    lines = _lines(d / "landing")
    for m in truth["malformed"]:
        raw = lines[m["file"]][m["line"] - 1]
        if m["kind"] == "oversize":
            assert len(raw) > 64 * 1024
        if m["kind"] == "replay":  # an exact copy of a line earlier in sorted file/line order
            earlier = [l for f in sorted(lines) for i, l in enumerate(lines[f], 1) if (f, i) < (m["file"], m["line"])]
            assert raw in earlier


def _lines(landing: Path) -> dict[str, list]:
    out = {}
    for p in sorted(landing.iterdir()):
        if p.name.endswith(".parquet"):
            out[p.name] = pq.read_table(p).to_pylist()
        else:
            raw = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
            out[p.name] = raw.split(b"\n")[:-1]
    return out


def test_files_come_in_every_format(datasets):
    names = list(datasets[0][1]["quarantine"])
    assert len(names) >= 6
    for ext in (".jsonl", ".jsonl.gz", ".parquet"):
        assert any(n.endswith(ext) and not (ext == ".jsonl" and n.endswith(".gz")) for n in names), ext
    layouts = set()
    for path in (datasets[0][0] / "landing").glob("*.parquet"):
        schema = pq.read_schema(path)
        assert {"actor", "subject", "data", "event_id", "occurred_at"} <= set(schema.names)
        layouts.add(str(schema.field("data").type).split("<")[0])
    assert layouts == {"string", "struct"}  # both layouts EVENTS.md allows


# ------------------------------------------------------------------------ realism

E164 = re.compile(r"^\+[1-9]\d{7,14}$")
MONEY = re.compile(r"^\d+\.\d{2}$")


def test_events_look_real(datasets):
    _d, _t, accepted, _q, _r = datasets[0]
    ids = [e["event_id"] for e in accepted]
    assert len(ids) == len(set(ids))
    subjects = [e["subject"] for e in accepted if e["subject"]]
    phones = [s["phone"] for s in subjects if s.get("phone")]
    assert phones and all(E164.match(p) for p in phones)
    assert any(s.get("email") for s in subjects) and any(s.get("name") for s in subjects)
    assert any(e["actor"].get("ip") for e in accepted)
    countries = Counter(s.get("country") for s in subjects)
    assert countries["US"] and countries["DE"] and countries["GB"]
    zones = [s.get("timezone", "absent") for s in subjects if s.get("phone")]
    assert "absent" in zones and None in zones and "America/Chicago" in zones and "Europe/Berlin" in zones
    for e in accepted:
        for field in ("amount", "price"):
            if e["data"].get(field) is not None:  # struct Parquet rows read back with null keys
                assert isinstance(e["data"][field], str) and MONEY.match(e["data"][field])
    stamps = [e["occurred_at"] for e in accepted]
    assert any(s.endswith("Z") for s in stamps) and any(re.search(r"[+-]\d\d:\d\d$", s) for s in stamps)
    assert any(re.search(r"-0[45]:00$", s) for s in stamps)  # local US offsets
    tenants = Counter(e["tenant_id"] for e in accepted)
    assert len(tenants) >= 3


def test_default_window_covers_the_us_dst_switch(datasets):
    _d, truth, accepted, _q, _r = datasets[0]
    background = Counter(parse_instant(e["occurred_at"]).date() for e in accepted)
    assert background[date(2026, 3, 7)] and background[date(2026, 3, 8)] and background[date(2026, 3, 9)]
    # Planted calls at 08:00 and 21:00 local, and a second either side, on the switch day itself.
    ids = {c["event_id"] for c in truth["planted"] if "DST switch day" in c["case"]}
    local = [parse_instant(e["occurred_at"]).astimezone(ZoneInfo("America/New_York"))
             for e in accepted if e["event_id"] in ids]
    on_the_day = {t.strftime("%H:%M:%S") for t in local if t.date() == date(2026, 3, 8)}
    assert {"07:59:59", "08:00:00", "20:59:59", "21:00:00"} <= on_the_day


def test_generator_and_reader_share_the_catalog():
    assert generate_module.REQUIRED_DATA == REQUIRED_DATA
