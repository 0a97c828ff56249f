"""`auditlake compliance` end to end: generated landing data (3 seeds) -> the real ingest ->
the command -> the findings table equals the generator's ground truth exactly, per rule
(precision and recall 1.0). Evaluations are kept; the latest one is what `latest_findings`
and the catalog's SQL show. Surprising data gives findings or quality warnings, never a
crash."""
from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import duckdb
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from quality_fixtures import write_jsonl  # noqa: E402

from auditlake.catalog import latest_findings_sql  # noqa: E402
from auditlake.cli import main  # noqa: E402
from auditlake.compliance import rules  # noqa: E402
from auditlake.compliance.run import (  # noqa: E402
    _findings_table,
    append_findings,
    evaluations,
    latest_findings,
)
from auditlake.generate import generate  # noqa: E402
from auditlake.lake.meta import open_lake_keys  # noqa: E402
from auditlake.lake.store import Lake  # noqa: E402


def cli(capsys, *argv) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        doc = None
    return rc, doc, err


def per_rule_scores(got: set[tuple[str, str]], want: set[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    scores = {}
    for rule in rules.RULE_IDS:
        g = {e for r, e in got if r == rule}
        w = {e for r, e in want if r == rule}
        tp = len(g & w)
        scores[rule] = (tp / len(g) if g else 1.0, tp / len(w) if w else 1.0)
    return scores


@pytest.mark.parametrize("seed,pass_as_of", [(11, False), (12, True), (13, False)])
def test_compliance_matches_ground_truth(tmp_path, capsys, seed, pass_as_of):
    out = tmp_path / "gen"
    generate(out, events=2500, seed=seed, days=20)
    truth = json.loads((out / "ground_truth.json").read_text())
    want = {(f["rule_id"], f["event_id"]) for f in truth["findings"]}
    lake_dir = str(tmp_path / "lake")

    rc, doc, err = cli(capsys, "--lake", lake_dir, "ingest", str(out / "landing"), "--json")
    assert rc == 0, err
    assert doc["accepted"] == truth["accepted"]

    argv = ["--lake", lake_dir, "compliance", "--json"] + (["--as-of", truth["as_of"]] if pass_as_of else [])
    rc, doc, err = cli(capsys, *argv)
    assert rc == 0, err  # findings are data; the quality suites find no error on generated data
    assert doc["ok"] is True
    assert doc["findings"] == len(want)
    assert doc["tree_size"] == truth["accepted"]
    assert doc["as_of"].startswith(truth["as_of"].rstrip("Z"))
    assert set(doc["by_rule"]) == set(rules.RULE_IDS)

    lake = Lake.open(lake_dir)
    latest = latest_findings(lake)
    got = set(zip(latest["rule_id"], latest["event_id"]))
    assert latest.height == len(got)  # one row per (rule_id, event_id)
    assert got == want
    assert all(s == (1.0, 1.0) for s in per_rule_scores(got, want).values())
    assert set(latest["evaluation_id"]) == {doc["evaluation_id"]}
    assert latest["code_version"][0].startswith("auditlake ") and "+rules." in latest["code_version"][0]
    assert (latest["tree_size"] == truth["accepted"]).all()
    by_rule = {r: sum(1 for rr, _ in want if rr == r) for r in rules.RULE_IDS}
    assert doc["by_rule"] == by_rule

    # The report, per evaluation and as `latest`.
    report = Path(doc["report"]["uri"])
    assert report.name == doc["evaluation_id"]
    csv = pl.read_csv(report / "by_rule.csv")
    assert dict(zip(csv["rule_id"], csv["findings"])) == by_rule
    assert (report.parent / "latest" / "report.html").read_text() == (report / "report.html").read_text()
    assert pl.read_csv(report / "daily.csv")["findings"].sum() == len(want)

    # Quality: every suite ran on real data; a planted unknown zone is at most a warning.
    for name in ("ledger", "quarantine", "findings"):
        q = doc["quality"][name]
        assert q["ok"], (name, q["failed"])
        assert q["rows"] > 0
    assert doc["quality"]["quarantine"]["rows"] == truth["events"] - truth["accepted"]
    assert Path(doc["data_docs"].removeprefix("file://")).exists()


def test_rerun_keeps_every_evaluation_and_latest_shows_one(tmp_path, capsys):
    out = tmp_path / "gen"
    generate(out, events=800, seed=21, days=10)
    truth = json.loads((out / "ground_truth.json").read_text())
    want = {(f["rule_id"], f["event_id"]) for f in truth["findings"]}
    lake_dir = str(tmp_path / "lake")
    assert cli(capsys, "--lake", lake_dir, "ingest", str(out / "landing"), "--json")[0] == 0
    rc1, first, _ = cli(capsys, "--lake", lake_dir, "compliance", "--json")
    rc2, second, _ = cli(capsys, "--lake", lake_dir, "compliance", "--json")
    assert rc1 == rc2 == 0 and first["evaluation_id"] != second["evaluation_id"]

    lake = Lake.open(lake_dir)
    evs = evaluations(lake)
    assert evs["evaluation_id"].to_list() == [second["evaluation_id"], first["evaluation_id"]]
    table = pl.from_arrow(lake.delta("findings").to_pyarrow_dataset().to_table())
    assert table.height == 2 * (len(want) + 1)  # each evaluation: its findings and one marker row
    latest = latest_findings(lake)
    assert set(latest["evaluation_id"]) == {second["evaluation_id"]}
    assert set(zip(latest["rule_id"], latest["event_id"])) == want

    # The catalog's view logic (DuckDB) selects the same rows.
    con = duckdb.connect()
    con.register("findings_table", table.to_arrow())
    rows = con.execute(latest_findings_sql("findings_table")).fetchall()
    cols = [d[0] for d in con.description]
    assert cols[:6] == ["rule_id", "event_id", "tenant_id", "occurred_at", "severity", "detail"]
    assert {(r[0], r[1]) for r in rows} == want
    assert {r[cols.index("evaluation_id")] for r in rows} == {second["evaluation_id"]}


def test_an_evaluation_without_findings_is_the_latest(lake):
    from datetime import datetime, timezone

    open_lake_keys(lake, create=True)

    fid = str(uuid.uuid4())
    base = pl.DataFrame({"rule_id": ["SOX-SOD"], "event_id": [fid], "tenant_id": ["t"],
                         "occurred_at": [datetime(2026, 3, 2, tzinfo=timezone.utc)], "severity": ["high"],
                         "detail": ["x"]}).with_columns(pl.col("occurred_at").cast(pl.Datetime("us", "UTC")))
    t1, t2 = datetime(2026, 3, 3, tzinfo=timezone.utc), datetime(2026, 3, 4, tzinfo=timezone.utc)
    append_findings(lake, _findings_table(base, "{}", "20260303T000000000000Z-aaaaaaaa", t1, t1, "v", 1))
    assert latest_findings(lake)["event_id"].to_list() == [fid]
    append_findings(lake, _findings_table(base.clear(), "{}", "20260304T000000000000Z-bbbbbbbb", t2, t2, "v", 1))
    assert latest_findings(lake).height == 0
    con = duckdb.connect()
    con.register("f", lake.delta("findings").to_pyarrow_dataset().to_table())
    assert con.execute(latest_findings_sql("f")).fetchall() == []
    # An evaluation dated in the future (only a forger writes one) never becomes the latest:
    # in an append-only table it would hide every later evaluation for good.
    ahead = datetime(2999, 1, 1, tzinfo=timezone.utc)
    append_findings(lake, _findings_table(base.clear(), "{}", "29990101T000000000000Z-cccccccc", ahead, ahead, "v", 1))
    t3 = datetime.now(timezone.utc)
    append_findings(lake, _findings_table(base, "{}", t3.strftime("%Y%m%dT%H%M%S%fZ") + "-dddddddd", t3, t3, "v", 1))
    assert latest_findings(lake)["event_id"].to_list() == [fid]
    con.register("f", lake.delta("findings").to_pyarrow_dataset().to_table())
    assert [r[1] for r in con.execute(latest_findings_sql("f")).fetchall()] == [fid]


def _ev(n: int, kind: str, at: str, data: dict, subject: dict | None = None, actor: str = "u-1") -> dict:
    return {"event_id": str(uuid.UUID(int=10_000 + n, version=4)), "occurred_at": at, "event_type": kind,
            "source": "svc", "tenant_id": "t1", "actor": {"type": "user", "id": actor}, "subject": subject,
            "lawful_basis": "consent", "data": data}


def test_surprising_data_gives_findings_or_warnings_never_a_crash(tmp_path, capsys):
    phone = {"id": "s1", "phone": "+13125550100", "country": "US", "region": "IL"}
    events = [
        _ev(1, "consent.granted", "2026-03-02T12:00:00Z", {"consent_id": "c1", "method": "web_form", "seller": "a"},
            phone | {"timezone": "America/Chicago"}),
        # an unknown zone name: the four-US-zone check flags 03:00Z (22:00/23:00 the evening before)
        _ev(2, "call.started", "2026-03-03T03:00:00Z",
            {"call_id": "k1", "direction": "outbound", "purpose": "telemarketing", "campaign_id": "cmp-9",
             "publisher_id": "pub-9"}, phone | {"timezone": "Mars/Olympus"}),
        _ev(3, "lead.sold", "2026-03-03T04:00:00Z", {"call_id": "k1", "buyer_id": "b", "price": "1.00",
                                                     "currency": "USD"}, {"id": "s1"}),
        # a request completed twice (the first completion counts), late
        _ev(4, "privacy.request_received", "2026-01-05T10:00:00Z",
            {"request_id": "r1", "regulation": "gdpr", "kind": "access"}, {"id": "s2", "country": "DE"}),
        _ev(5, "privacy.request_completed", "2026-02-20T10:00:00Z", {"request_id": "r1", "outcome": "fulfilled"}),
        _ev(6, "privacy.request_completed", "2026-02-21T10:00:00Z", {"request_id": "r1", "outcome": "fulfilled"}),
        # a payout recorded once and approved twice, both times by its recorder
        _ev(7, "payout.recorded", "2026-03-02T09:00:00Z",
            {"payout_id": "p1", "call_id": "k1", "publisher_id": "pub-9", "amount": "5.00", "currency": "USD"}),
        _ev(8, "payout.approved", "2026-03-02T10:00:00Z", {"payout_id": "p1"}),
        _ev(9, "payout.approved", "2026-03-02T11:00:00Z", {"payout_id": "p1"}),
        # an approval of a payout that was never recorded
        _ev(10, "payout.approved", "2026-03-02T12:00:00Z", {"payout_id": "nope"}, actor="u-2"),
    ]
    landing = write_jsonl(tmp_path / "landing" / "odd.jsonl", events)
    lake_dir = str(tmp_path / "lake")
    assert cli(capsys, "--lake", lake_dir, "ingest", str(landing), "--json")[0] == 0
    rc, doc, err = cli(capsys, "--lake", lake_dir, "compliance", "--json")
    assert rc == 0, err
    got = {(r, e) for r, e in zip(*latest_findings(Lake.open(lake_dir)).select("rule_id", "event_id"))}
    ids = {n: str(uuid.UUID(int=10_000 + n, version=4)) for n in range(1, 11)}
    assert ("TCPA-HOURS", ids[2]) in got
    assert ("GDPR-LATE", ids[4]) in got
    assert {("SOX-SOD", ids[8]), ("SOX-SOD", ids[9]), ("SOX-SOD", ids[10])} <= {x for x in got if x[0] == "SOX-SOD"}
    # the unknown zone is also a data-quality warning, with the name as the example
    ledger = doc["quality"]["ledger"]
    assert ledger["ok"] and not ledger["success"] and ledger["severity"] == "warn"
    assert any("subject_timezone" in line and "Mars/Olympus" in line for line in ledger["failed"])
    assert "Mars/Olympus" in err  # also told on stderr when --json holds stdout
    # the report attributes the call findings to the call's campaign and publisher
    report = doc["report"]["uri"]
    assert pl.read_csv(Path(report) / "top_campaigns.csv")["campaign_id"].to_list() == ["cmp-9"]
    assert "pub-9" in pl.read_csv(Path(report) / "top_publishers.csv")["publisher_id"].to_list()


def test_no_lake_empty_lake_and_bad_as_of(tmp_path, capsys):
    lake_dir = str(tmp_path / "lake")
    rc, doc, err = cli(capsys, "--lake", lake_dir, "compliance", "--json")
    assert rc == 2 and "no lake" in err and not Path(lake_dir).exists()  # a typo creates nothing
    open_lake_keys(Lake.open(lake_dir), create=True)  # a lake with no events yet
    rc, doc, err = cli(capsys, "--lake", lake_dir, "compliance", "--json")
    assert rc == 0, err
    assert doc["findings"] == 0 and doc["tree_size"] == 0 and doc["as_of"] is None
    assert latest_findings(Lake.open(lake_dir)).height == 0
    rc, doc, err = cli(capsys, "--lake", lake_dir, "compliance", "--as-of", "yesterday")
    assert rc == 2 and "--as-of" in err and len(err.strip().splitlines()) == 1


@pytest.mark.s3
def test_compliance_on_an_s3_lake(s3_lake_uri, tmp_path, capsys):
    from quality_fixtures import clean_events

    landing = write_jsonl(tmp_path / "landing" / "events.jsonl", clean_events() + ["not json"])
    assert cli(capsys, "--lake", s3_lake_uri, "ingest", str(landing), "--json")[0] == 0
    rc, doc, err = cli(capsys, "--lake", s3_lake_uri, "compliance", "--json")
    assert rc == 0, err
    assert doc["tree_size"] == 40 and doc["findings"] > 0
    lake = Lake.open(s3_lake_uri)
    assert latest_findings(lake).height == doc["findings"]
    # the report and the GX Data Docs are written into the bucket
    assert doc["report"]["html"].startswith(s3_lake_uri)
    assert b"Compliance report" in lake.read_bytes(f"reports/compliance/{doc['evaluation_id']}/report.html")
    assert doc["data_docs"] == f"{s3_lake_uri}/reports/data_docs/index.html"
    index = lake.read_bytes("reports/data_docs/index.html")
    assert index and doc["evaluation_id"].encode() in index
    pages = doc["quality"]["ledger"]["data_docs_pages"]
    assert lake.read_bytes(pages["ledger.keys"].removeprefix(s3_lake_uri + "/"))
    # a second run keeps the first run's results in the index (they are mirrored back)
    rc, doc2, err = cli(capsys, "--lake", s3_lake_uri, "compliance", "--json")
    assert rc == 0, err
    index = lake.read_bytes("reports/data_docs/index.html")
    assert doc["evaluation_id"].encode() in index and doc2["evaluation_id"].encode() in index
