"""The compliance report of one evaluation: counts per rule, a daily trend, and the
tenants, campaigns and publishers with the most findings.

Written as HTML and CSV under `<lake>/reports/compliance/<evaluation_id>/` and copied to
`<lake>/reports/compliance/latest/`; returned as a dict (with a Markdown rendering) that
Dagster shows as materialisation metadata.

Attribution of a finding to a campaign and a publisher, from the ledger's `data` JSON:
1. the flagged event's own `data.campaign_id` / `data.publisher_id` (a `call.started`;
   a `payout.recorded` carries its publisher);
2. else the `call.started` with the same `tenant_id` and `data.call_id` (lead.sold,
   bid.placed, call.completed, payout.recorded);
3. else, for a `payout.approved`, the `payout.recorded` with the same `tenant_id` and
   `data.payout_id`, and through its `call_id` the call.
The first matching event in ledger order wins. Findings without a call (GDPR, SOX-CHANGE,
privacy requests) have no campaign or publisher and are left out of those two lists.
"""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone

import polars as pl

from ..lake.store import Lake

TOP_N = 10
REPORT_ROOT = "reports/compliance"
FILES = ("report.html", "summary.json", "by_rule.csv", "daily.csv", "top_tenants.csv",
         "top_campaigns.csv", "top_publishers.csv", "findings.csv")


# ------------------------------------------------------------------------ attribution

def _field(name: str) -> pl.Expr:
    return pl.col("data").str.json_path_match(f"$.{name}")


def attribute(findings: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """`findings` plus `event_type`, `campaign_id` and `publisher_id` (null when the
    finding has no call)."""
    if findings.height == 0:
        return findings.with_columns(event_type=pl.lit(None, pl.Utf8), campaign_id=pl.lit(None, pl.Utf8),
                                     publisher_id=pl.lit(None, pl.Utf8))
    # Only the events the attribution needs are parsed: the flagged ones, then the payouts
    # and calls they name (a cheap substring pre-filter before the JSON parse).
    def in_order(df: pl.DataFrame) -> pl.DataFrame:  # ledger order, after filtering (cheap)
        return df.sort("seq") if "seq" in df.columns else df

    ev = (in_order(events.filter(pl.col("event_id").is_in(findings["event_id"].unique().implode())))
          .select("event_id", "event_type", "data").unique("event_id", keep="first", maintain_order=True))
    flagged = (
        findings.join(ev, on="event_id", how="left")
        .with_columns(own_campaign=_field("campaign_id"), own_publisher=_field("publisher_id"),
                      call_id=_field("call_id"), payout_id=_field("payout_id"))
        .drop("data")
    )

    def named(kind: str, key: str, ids: pl.Series) -> pl.DataFrame:
        """The events of type `kind` whose data.`key` is in `ids`. The key is pre-read
        with a regex over the canonical (RFC 8785, no whitespace) data JSON, which is ~5x
        cheaper than a JSON parse of every row; callers parse the few rows it keeps."""
        wanted = ids.drop_nulls().unique()
        if wanted.len() == 0:
            return events.clear()
        rows = (
            events.lazy().with_row_index("_row").filter(pl.col("event_type") == kind)
            .select("_row", k=pl.col("data").str.extract(f'"{key}":"([^"\\\\]*)"'))
            .filter(pl.col("k").is_in(wanted.implode())).collect()["_row"]
        )
        return in_order(events[rows])

    payouts = (
        named("payout.recorded", "payout_id", flagged["payout_id"])
        .select("tenant_id", payout_id=_field("payout_id"), payout_call=_field("call_id"),
                payout_publisher=_field("publisher_id"))
        .filter(pl.col("payout_id").is_not_null())
        .unique(["tenant_id", "payout_id"], keep="first", maintain_order=True)
    )
    wanted_calls = pl.concat([flagged["call_id"], payouts["payout_call"]])
    calls = (
        named("call.started", "call_id", wanted_calls)
        .select("tenant_id", call_id=_field("call_id"), call_campaign=_field("campaign_id"),
                call_publisher=_field("publisher_id"))
        .filter(pl.col("call_id").is_not_null())
        .unique(["tenant_id", "call_id"], keep="first", maintain_order=True)
    )
    out = (
        flagged.join(payouts, on=["tenant_id", "payout_id"], how="left")
        .with_columns(call_key=pl.coalesce("call_id", "payout_call"))
        .join(calls, left_on=["tenant_id", "call_key"], right_on=["tenant_id", "call_id"], how="left")
        .with_columns(
            campaign_id=pl.coalesce("own_campaign", "call_campaign"),
            publisher_id=pl.coalesce("own_publisher", "payout_publisher", "call_publisher"),
        )
    )
    return out.select(*findings.columns, "event_type", "campaign_id", "publisher_id")


# ------------------------------------------------------------------------ tables

def by_rule_table(findings: pl.DataFrame) -> pl.DataFrame:
    from .rules import RULE_IDS, SEVERITY

    counts = (
        findings.group_by("rule_id").agg(findings=pl.len(), tenants=pl.col("tenant_id").n_unique())
        if findings.height else pl.DataFrame(schema={"rule_id": pl.Utf8, "findings": pl.UInt32, "tenants": pl.UInt32})
    )
    base = pl.DataFrame({"rule_id": list(RULE_IDS), "severity": [SEVERITY[r] for r in RULE_IDS]})
    return base.join(counts, on="rule_id", how="left").with_columns(
        pl.col("findings").fill_null(0).cast(pl.Int64), pl.col("tenants").fill_null(0).cast(pl.Int64))


def daily_table(findings: pl.DataFrame) -> pl.DataFrame:
    """One row per UTC date of the flagged events: total and one column per rule."""
    from .rules import RULE_IDS

    if findings.height == 0:
        return pl.DataFrame(schema={"date": pl.Utf8, "findings": pl.Int64, **{r: pl.Int64 for r in RULE_IDS}})
    long = findings.with_columns(date=pl.col("occurred_at").dt.strftime("%Y-%m-%d")).group_by("date", "rule_id").len()
    wide = long.pivot(on="rule_id", index="date", values="len", aggregate_function="sum")
    for r in RULE_IDS:
        if r not in wide.columns:
            wide = wide.with_columns(pl.lit(0).alias(r))
    wide = wide.with_columns([pl.col(r).fill_null(0).cast(pl.Int64) for r in RULE_IDS])
    return wide.with_columns(findings=pl.sum_horizontal(list(RULE_IDS)).cast(pl.Int64)).select(
        "date", "findings", *RULE_IDS).sort("date")


def top_table(attributed: pl.DataFrame, key: str, n: int = TOP_N) -> pl.DataFrame:
    """The `n` values of `key` with the most findings: findings, high (severity), rules."""
    rows = attributed.filter(pl.col(key).is_not_null())
    if rows.height == 0:
        return pl.DataFrame(schema={key: pl.Utf8, "findings": pl.Int64, "high": pl.Int64, "rules": pl.Utf8})
    per_rule = (
        rows.group_by(key, "rule_id").len().sort(["len", "rule_id"], descending=[True, False])
        .group_by(key, maintain_order=True)
        .agg(rules=pl.concat_str(pl.col("rule_id"), pl.lit(":"), pl.col("len").cast(pl.Utf8)).str.join(", "))
    )
    totals = rows.group_by(key).agg(findings=pl.len().cast(pl.Int64),
                                    high=(pl.col("severity") == "high").sum().cast(pl.Int64))
    return (totals.join(per_rule, on=key).sort(["findings", key], descending=[True, False]).head(n)
            .select(key, "findings", "high", "rules"))


# ------------------------------------------------------------------------ rendering

def _md_table(df: pl.DataFrame, limit: int | None = None) -> str:
    if df.height == 0:
        return "_none_\n"
    rows = df.head(limit) if limit else df
    head = "| " + " | ".join(rows.columns) + " |\n|" + "---|" * len(rows.columns) + "\n"
    body = "".join("| " + " | ".join("" if v is None else str(v).replace("|", "\\|") for v in r) + " |\n"
                   for r in rows.iter_rows())
    return head + body


def to_markdown(summary: dict, by_rule: pl.DataFrame, daily: pl.DataFrame, tops: dict[str, pl.DataFrame]) -> str:
    parts = [
        f"**Evaluation** `{summary['evaluation_id']}`: {summary['findings']} findings over "
        f"{summary['tree_size']} events, as of {summary['as_of']} ({summary['code_version']})\n",
        "### Findings by rule\n", _md_table(by_rule),
        "### Daily trend (latest 14 days with findings)\n", _md_table(daily.select("date", "findings").tail(14)),
    ]
    for title, df in (("tenants", tops["tenant_id"]), ("campaigns", tops["campaign_id"]),
                      ("publishers", tops["publisher_id"])):
        parts += [f"### Top {title}\n", _md_table(df)]
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}td.n{text-align:right}
.meta{color:#555}.high{color:#a00;font-weight:600}svg{background:#fafafa;border:1px solid #ddd}"""


def _html_table(df: pl.DataFrame) -> str:
    if df.height == 0:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for row in df.iter_rows():
        cells = []
        for v in row:
            cls = ' class="n"' if isinstance(v, (int, float)) else (' class="high"' if v == "high" else "")
            cells.append(f"<td{cls}>{'' if v is None else html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _svg_trend(daily: pl.DataFrame, width: int = 760, height: int = 160) -> str:
    if daily.height == 0:
        return ""
    values = daily["findings"].to_list()
    dates = daily["date"].to_list()
    top = max(values) or 1
    bar = width / len(values)
    bars = []
    for i, (d, v) in enumerate(zip(dates, values)):
        h = (height - 20) * v / top
        bars.append(f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}" '
                    f'fill="#c0392b"><title>{html.escape(d)}: {v}</title></rect>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="findings per day">{"".join(bars)}<text x="4" y="14" font-size="11">max {top}/day</text></svg>')


def to_html(summary: dict, by_rule: pl.DataFrame, daily: pl.DataFrame, tops: dict[str, pl.DataFrame]) -> str:
    esc = html.escape
    links = " | ".join(f'<a href="{f}">{f}</a>' for f in FILES if f.endswith(".csv"))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Compliance report {esc(summary['evaluation_id'])}</title>
<style>{_CSS}</style></head><body>
<h1>Compliance report</h1>
<p class="meta">Evaluation <code>{esc(summary['evaluation_id'])}</code> at {esc(str(summary['evaluated_at']))};
as of {esc(str(summary['as_of']))}; {summary['tree_size']} ledger events; {summary['findings']} findings;
{esc(summary['code_version'])}.</p>
<h2>Findings by rule</h2>{_html_table(by_rule)}
<h2>Daily trend</h2>{_svg_trend(daily)}{_html_table(daily)}
<h2>Top tenants</h2>{_html_table(tops['tenant_id'])}
<h2>Top campaigns</h2>{_html_table(tops['campaign_id'])}
<h2>Top publishers</h2>{_html_table(tops['publisher_id'])}
<p class="meta">CSV: {links}. Campaigns and publishers come from the flagged event's data, or from the
call.started of the same call (via the payout for approvals); findings without a call are not attributed.</p>
</body></html>"""


# ------------------------------------------------------------------------ writing

def build_report(summary: dict, findings: pl.DataFrame, events: pl.DataFrame) -> tuple[dict, dict[str, bytes]]:
    """(the report dict without locations, {file name: bytes})."""
    attributed = attribute(findings, events)
    by_rule = by_rule_table(findings)
    daily = daily_table(findings)
    tops = {k: top_table(attributed, k) for k in ("tenant_id", "campaign_id", "publisher_id")}
    head = {k: summary[k] for k in ("evaluation_id", "as_of", "evaluated_at", "code_version", "tree_size", "findings")}
    doc = {
        **head,
        "by_rule": by_rule.to_dicts(),
        "daily": daily.select("date", "findings").to_dicts(),
        "top_tenants": tops["tenant_id"].to_dicts(),
        "top_campaigns": tops["campaign_id"].to_dicts(),
        "top_publishers": tops["publisher_id"].to_dicts(),
        "markdown": to_markdown(summary, by_rule, daily, tops),
    }
    findings_csv = attributed.with_columns(pl.col("occurred_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"))
    files = {
        "report.html": to_html(summary, by_rule, daily, tops).encode(),
        "summary.json": json.dumps({k: v for k, v in doc.items() if k != "markdown"}, indent=2, default=str).encode(),
        "by_rule.csv": by_rule.write_csv().encode(),
        "daily.csv": daily.write_csv().encode(),
        "top_tenants.csv": tops["tenant_id"].write_csv().encode(),
        "top_campaigns.csv": tops["campaign_id"].write_csv().encode(),
        "top_publishers.csv": tops["publisher_id"].write_csv().encode(),
        "findings.csv": findings_csv.write_csv().encode(),
    }
    return doc, files


def write_report(lake: Lake, summary: dict, findings: pl.DataFrame, events: pl.DataFrame) -> dict:
    """Write the report of one evaluation and its `latest` copy; return the report dict
    with `uri` (its folder), `latest_uri`, `html` and `files` ({name: URI})."""
    doc, files = build_report(summary, findings, events)
    folder = f"{REPORT_ROOT}/{summary['evaluation_id']}"
    for name, data in files.items():
        lake.write_bytes(f"{folder}/{name}", data)
    for name, data in files.items():  # then the `latest` copy (overwritten file by file)
        lake.write_bytes(f"{REPORT_ROOT}/latest/{name}", data)
    doc.update(
        uri=lake.child(folder),
        latest_uri=lake.child(f"{REPORT_ROOT}/latest"),
        html=lake.child(f"{folder}/report.html"),
        files={name: lake.child(f"{folder}/{name}") for name in files},
        written_at=datetime.now(timezone.utc).isoformat(),
    )
    return doc
