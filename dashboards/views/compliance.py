"""Compliance: findings of the latest evaluation per rule, drill-down to the events, and a
daily trend."""
from __future__ import annotations

import math

import streamlit as st

from dashboards import core

PAGE_SIZE = 50


def render(user: dict) -> None:
    st.header("Compliance")
    vers = core.versions()
    latest = core.query("SELECT evaluation_id, evaluated_at, as_of FROM findings LIMIT 1", (), vers)
    if not len(latest):
        st.info("No findings in the latest evaluation (or no evaluation yet: run `auditlake compliance`).")
        return
    eval_id = latest.iloc[0]["evaluation_id"]
    st.text(f"evaluation {eval_id}, evaluated at {latest.iloc[0]['evaluated_at']}, as of {latest.iloc[0]['as_of']}")
    # One pass over the latest evaluation: per rule, severity and the event's day.
    agg = core.query(
        "SELECT rule_id, severity, DATE '1970-01-01' + CAST(epoch_us(occurred_at) // 86400000000 AS INTEGER) AS day, "
        "count(*) AS findings FROM findings_history WHERE evaluation_id = ? GROUP BY ALL", (eval_id,), vers)
    per_rule = agg.groupby(["rule_id", "severity"], as_index=False)["findings"].sum().sort_values("rule_id")
    trend = agg.groupby(["day", "rule_id"], as_index=False)["findings"].sum().sort_values(["day", "rule_id"])
    left, right = st.columns(2)
    with left:
        st.subheader("Findings per rule")
        st.bar_chart(per_rule, x="rule_id", y="findings")
    with right:
        core.show_table(per_rule, key="comp_rules")
    st.subheader("Daily trend (by the event's date)")
    if len(trend):
        st.line_chart(trend, x="day", y="findings", color="rule_id")

    st.subheader("Drill down")
    rules = per_rule["rule_id"].drop_duplicates().tolist()
    c1, c2 = st.columns(2)
    rule = c1.selectbox("Rule", rules, key="comp_rule")
    n = int(per_rule[per_rule["rule_id"] == rule]["findings"].sum())
    pages = max(1, math.ceil(n / PAGE_SIZE))
    page = min(int(c2.number_input("Page", min_value=1, value=1, step=1, key="comp_page")), pages)
    rows = core.query("SELECT event_id, tenant_id, occurred_at, severity, detail FROM findings_history "
                      "WHERE evaluation_id = ? AND rule_id = ? ORDER BY occurred_at, event_id LIMIT ? OFFSET ?",
                      (eval_id, rule, PAGE_SIZE, (page - 1) * PAGE_SIZE), vers)
    st.caption(f"{n:,} findings of this rule; page {page} of {pages}")
    if not len(rows):
        return
    ids = rows["event_id"].tolist()
    days = sorted({t.strftime("%Y-%m-%d") for t in rows["occurred_at"]})
    ev = core.query(
        f"SELECT event_id, event_type, actor_id, subject_id, seq, event_date FROM events "
        f"WHERE event_date IN ({', '.join('?' for _ in days)}) AND event_id IN ({', '.join('?' for _ in ids)})",
        days + ids, vers)
    merged = rows.merge(ev, on="event_id", how="left")
    core.show_table(merged, key="comp_events")
    dates = dict(zip(ev["event_id"], ev["event_date"]))
    chosen = st.selectbox("Event", ids, key="comp_pick")
    st.button("Open event", key="comp_open", on_click=core.goto, args=("Event",),
              kwargs={"event_id": chosen, "event_date_hint": dates.get(chosen) or ""})
