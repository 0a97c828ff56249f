"""Overview: events per day and per type, integrity status, quarantine, findings per rule,
and a live tail of the newest sealed events."""
from __future__ import annotations

import hashlib
import json
import pwd
import threading
from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from dashboards import core


@st.cache_data(show_spinner=False, max_entries=8)
def files_by_day(uri: str, ledger_version) -> dict[str, tuple[int, str]]:
    """{event_date: (events, key of its file set)} from the Delta log alone (each data file
    holds one day: its record count is exact), no data read."""
    import pyarrow as pa

    from auditlake.lake.store import Lake

    dt = Lake.open(uri).delta("ledger")
    if dt is None:
        return {}
    a = pa.table(dt.get_add_actions(flatten=True)).select(["path", "num_records", "partition.event_date"]).to_pylist()
    days: dict[str, list] = {}
    for r in a:
        days.setdefault(r["partition.event_date"], []).append((r["path"], r["num_records"] or 0))
    return {d: (sum(n for _, n in fs), hashlib.sha256("\n".join(sorted(p for p, _ in fs)).encode()).hexdigest()[:16])
            for d, fs in days.items()}


@st.cache_resource(show_spinner=False)
def _type_counts_store(uri: str) -> dict:
    return {"lock": threading.Lock(), "days": {}}


def events_per_day_and_type(vers: tuple) -> pd.DataFrame:
    """Counts per (event_date, event_type). Ledger files never change once written, so the
    counts of a day are kept until the day's file set changes: after a batch lands only
    the days it touched are read again."""
    uri = core.explorer().lake.uri
    days = files_by_day(uri, dict(vers).get("ledger"))
    store = _type_counts_store(uri)
    with store["lock"]:
        known = store["days"]
        stale = sorted(d for d, (_, key) in days.items() if known.get(d, (None,))[0] != key)
        if stale:
            df = core.uncached(
                f"SELECT event_date, event_type, count(*) AS events FROM events WHERE event_date IN "
                f"({', '.join('?' for _ in stale)}) GROUP BY ALL", stale)
            for d in stale:
                part = df[df["event_date"] == d]
                known[d] = (days[d][1], dict(zip(part["event_type"], part["events"].astype(int))))
        rows = [{"event_date": d, "event_type": t, "events": n}
                for d in sorted(days) for t, n in sorted(known[d][1].items())]
    return pd.DataFrame(rows, columns=["event_date", "event_type", "events"])


def trust_status(lake) -> dict | None:
    """The last checkpoint `auditlake verify` accepted on this machine (the trust store):
    tree size, root, when and by which OS account it was verified."""
    try:
        from auditlake.verify import trust_path

        meta = lake.read_json("auditlake.json") or {}
        path = trust_path(meta["log_id"])
        st_ = path.stat()
        doc = json.loads(path.read_text())
    except Exception:  # noqa: BLE001 - no lake id, never verified, unreadable
        return None
    try:
        who = pwd.getpwuid(st_.st_uid).pw_name
    except KeyError:
        who = str(st_.st_uid)
    return {
        "tree_size": doc.get("tree_size"),
        "root": doc.get("root"),
        "checkpoint_time": doc.get("time"),
        "verified_at": datetime.fromtimestamp(st_.st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "verified_by": f"{who} (trust store of this machine)",
        "checkpoint_hash": doc.get("checkpoint_hash"),
    }


def render(user: dict) -> None:
    st.header("Overview")
    ex = core.explorer()
    vers = core.versions()
    st.text(f"reading: {ex.source}")

    per = events_per_day_and_type(vers)
    cp = core.query("SELECT tree_size, root, time_text, key_id, checkpoint_hash FROM checkpoints "
                    "ORDER BY tree_size DESC, time DESC LIMIT 1", (), vers)
    total = int(per["events"].sum()) if len(per) else 0
    q = core.query("SELECT reason, count(*) AS lines FROM quarantine GROUP BY 1 ORDER BY 2 DESC, 1", (), vers)
    f = core.query("SELECT rule_id, severity, count(*) AS findings FROM findings GROUP BY ALL ORDER BY 1", (), vers)

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Events", f"{total:,}")
    c2.metric("Tree size (last checkpoint)", f"{int(cp.iloc[0]['tree_size']):,}" if len(cp) else "0")
    c3.metric("Quarantined lines", f"{int(q['lines'].sum()) if len(q) else 0:,}")
    c4.metric("Findings (latest evaluation)", f"{int(f['findings'].sum()) if len(f) else 0:,}")

    st.subheader("Integrity")
    trust = trust_status(ex.lake)
    status = {
        "last_checkpoint": None if not len(cp) else {
            "tree_size": int(cp.iloc[0]["tree_size"]), "root": cp.iloc[0]["root"], "time": cp.iloc[0]["time_text"],
            "key_id": cp.iloc[0]["key_id"], "checkpoint_hash": cp.iloc[0]["checkpoint_hash"]},
        "last_verified_checkpoint": trust,
    }
    latest = status["last_checkpoint"]
    if trust is None:
        st.warning("No verified checkpoint on this machine yet: run `auditlake verify`.")
    elif latest and all(trust.get(k) == latest[k] for k in ("tree_size", "root", "checkpoint_hash")):
        st.success(f"The latest checkpoint is the one `auditlake verify` last accepted on this machine "
                   f"({trust['verified_at']}); changes since then show only in a new verify.")
    elif latest and isinstance(trust.get("tree_size"), int) and trust["tree_size"] < latest["tree_size"]:
        st.info("Events were sealed after the last verification: run `auditlake verify` to extend trust.")
    else:
        st.error("The lake's checkpoints do not hold the one `auditlake verify` last accepted on this machine "
                 "(another root or hash at its size, or fewer events): they may have been tampered with. "
                 "Run `auditlake verify`.")
    st.json(status, expanded=True)

    left, right = st.columns(2)
    with left:
        st.subheader("Events per day")
        if len(per):
            daily = per.groupby("event_date", as_index=False)["events"].sum()
            st.bar_chart(daily, x="event_date", y="events")
    with right:
        st.subheader("Events per type")
        if len(per):
            types = per.groupby("event_type", as_index=False)["events"].sum().sort_values("events", ascending=False)
            st.bar_chart(types, x="event_type", y="events", horizontal=True)

    left, right = st.columns(2)
    with left:
        st.subheader("Quarantine")
        core.show_table(q, key="ov_quarantine")
    with right:
        st.subheader("Findings per rule")
        core.show_table(f, key="ov_findings")

    live_tail()


@st.fragment(run_every=3)
def live_tail() -> None:
    """The newest sealed events (covered by the latest checkpoint); refreshes as batches land."""
    st.subheader("Live tail: newest sealed events")
    try:
        _tail()
    except Exception as exc:  # noqa: BLE001 - the fragment reruns on its own, outside the page's guard
        core.show_failure(exc)


def _tail() -> None:
    vers = core.versions()
    cp = core.query("SELECT max(tree_size) AS n FROM checkpoints", (), vers)
    n = int(cp.iloc[0]["n"]) if len(cp) and cp.iloc[0]["n"] == cp.iloc[0]["n"] and cp.iloc[0]["n"] is not None else 0
    tail = core.query(
        "SELECT seq, event_id, event_type, occurred_at, tenant_id, ingested_at FROM events "
        "WHERE seq >= ? AND seq < ? ORDER BY seq DESC LIMIT 20", (max(n - 20, 0), n), vers)
    st.caption(f"tree size {n:,}; refreshed {datetime.now(timezone.utc).strftime('%H:%M:%S')} UTC")
    core.show_table(tail, key="ov_tail")
