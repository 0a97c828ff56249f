"""Search: a required time range and optional filters; paginated; parameterised SQL only."""
from __future__ import annotations

import math

import streamlit as st

from auditlake.contract import EVENT_TYPES
from dashboards import core

PAGE_SIZE = 50
RESULT_COLUMNS = "seq, event_id, occurred_at, event_type, tenant_id, actor_id, subject_id, pii, event_date"


def build_where(start, end, types, tenant, subject, call_id, actor) -> tuple[str, list]:
    """The WHERE clause (fixed SQL text) and its parameters (every user value)."""
    d0, d1 = core.day_bounds(start, end)
    where = ["event_date BETWEEN ? AND ?", "occurred_at >= ?", "occurred_at < ?"]
    params: list = [d0, d1, start, end]
    if types:
        where.append(f"event_type IN ({', '.join('?' for _ in types)})")
        params += list(types)
    for value, clause in ((tenant, "tenant_id = ?"), (subject, "subject_id = ?"),
                          (call_id, "json_extract_string(data, '$.call_id') = ?"), (actor, "actor_id = ?")):
        if value:
            where.append(clause)
            params.append(value)
    return " AND ".join(where), params


def render(user: dict) -> None:
    st.header("Search")
    rng = core.time_range("search")
    c1, c2, c3 = st.columns(3)
    types = c1.multiselect("Event type", sorted(EVENT_TYPES), key="search_types")
    tenant = c2.text_input("Tenant", key="search_tenant").strip()
    actor = c3.text_input("Actor id", key="search_actor").strip()
    c4, c5, c6 = st.columns(3)
    subject = c4.text_input("Subject id", key="search_subject").strip()
    call_id = c5.text_input("Call id", key="search_call").strip()
    page = int(c6.number_input("Page", min_value=1, value=1, step=1, key="search_page"))
    if rng is None:
        return
    where, params = build_where(*rng, types, tenant, subject, call_id, actor)
    vers = core.versions()
    total = int(core.query(f"SELECT count(*) AS n FROM events WHERE {where}", params, vers).iloc[0]["n"])
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(page, pages)
    rows = core.query(
        f"SELECT {RESULT_COLUMNS} FROM events WHERE {where} ORDER BY occurred_at, seq LIMIT ? OFFSET ?",
        params + [PAGE_SIZE, (page - 1) * PAGE_SIZE], vers)
    st.caption(f"{total:,} matching events; page {page} of {pages} ({PAGE_SIZE} per page)")
    core.show_table(rows, key="search_results")
    if len(rows):
        ids = rows["event_id"].tolist()
        dates = dict(zip(rows["event_id"], rows["event_date"]))
        chosen = st.selectbox("Event", ids, key="search_pick")
        st.button("Open event", key="search_open", on_click=core.goto,
                  args=("Event",), kwargs={"event_id": chosen, "event_date_hint": dates.get(chosen) or ""})
