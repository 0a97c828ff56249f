"""Event: every field (PII masked), its chain neighbours, its inclusion proof and a
"verify this event" button that checks the proof in this session."""
from __future__ import annotations

import hashlib
import json
import re

import streamlit as st

from auditlake.masking import mask_json
from dashboards import core


DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def load_event(event_id: str, date_hint: str | None):
    vers = core.versions()
    if date_hint:
        df = core.query("SELECT * FROM events WHERE event_date = ? AND event_id = ?", (date_hint, event_id), vers)
        if len(df):
            return df.iloc[0].to_dict()
    df = core.query("SELECT * FROM events WHERE event_id = ?", (event_id,), vers)
    return df.iloc[0].to_dict() if len(df) else None


def record_for_display(row: dict) -> dict:
    import pandas as pd

    out = {}
    for k, v in row.items():
        if not isinstance(v, (list, dict)) and pd.isna(v):
            v = None
        elif hasattr(v, "isoformat"):
            v = v.isoformat()
        elif hasattr(v, "item"):
            v = v.item()
        if k == "data":
            try:
                v = core.shown_json(mask_json(json.loads(v)))
            except (TypeError, ValueError):
                v = core.shown(str(v))
        elif isinstance(v, str):  # a producer's actor id, region or time zone may hold PII too
            v = core.shown(v)
        out[k] = v
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def _proof(uri: str, event_id: str, cp_version):
    from auditlake.lake.store import Lake
    from auditlake.proofs import inclusion_proof

    return inclusion_proof(Lake.open(uri), event_id)


def proof_summary(doc: dict) -> dict:
    """The proof without the leaf's sealed values: indices, root, path and checkpoint."""
    leaf = doc.get("leaf")
    leaf_bytes = leaf.encode() if isinstance(leaf, str) else (leaf or b"")
    out = {k: v for k, v in doc.items() if k not in ("leaf", "leaf_b64")}
    out["leaf_hash"] = hashlib.sha256(b"\x00" + leaf_bytes).hexdigest() if leaf_bytes else None
    return out


def pinned_keys(lake) -> dict | None:
    """The lake's verification keys from the local keystore (trust is pinned to them, not
    to the key the proof document carries); None when this machine has no keystore."""
    try:
        from auditlake.keys import KeyStore, auditlake_home

        meta = lake.read_json("auditlake.json") or {}
        if not (auditlake_home() / "keystores" / meta["log_id"] / "keys.json").exists():
            return None
        return KeyStore(meta["log_id"]).public_keys()
    except Exception:  # noqa: BLE001
        return None


def leaf_fields(doc: dict) -> dict | None:
    leaf = doc.get("leaf")
    try:
        return json.loads(leaf) if isinstance(leaf, (str, bytes)) else None
    except ValueError:
        return None


def check_proof(doc: dict, row: dict) -> tuple[bool, str]:
    """The proof must verify (Merkle path + checkpoint signature) and be about this event."""
    from auditlake.proofs import verify_proof_doc

    ok, reason = verify_proof_doc(doc, pinned_keys(core.explorer().lake))
    if not ok:
        return False, reason
    leaf = leaf_fields(doc)
    if leaf is None or leaf.get("event_id") != row["event_id"] or int(leaf.get("seq", -1)) != int(row["seq"]):
        return False, "the proof's leaf is not this event"
    cp = core.query("SELECT root FROM checkpoints WHERE tree_size = ?", (int(doc.get("tree_size", -1)),))
    if len(cp) and doc.get("root") not in set(cp["root"]):
        return False, "the proof's root is not the lake's checkpoint root at that tree size"
    return True, reason or "the event is included in the signed checkpoint"


def render(user: dict) -> None:
    st.header("Event")
    c1, c2 = st.columns([3, 1])
    event_id = c1.text_input("Event id", key="event_id").strip().lower()
    hint = c2.text_input("UTC date (optional: reads one day)", key="event_date_hint", placeholder="YYYY-MM-DD").strip()
    if hint and not DATE_RE.match(hint):
        st.warning("The date must be YYYY-MM-DD.")
        hint = ""
    if not event_id:
        st.info("Enter an event id, or open one from Search or Compliance.")
        return
    if not core.UUID_RE.match(event_id):
        st.warning("That is not an event id (a UUID).")
        return
    row = load_event(event_id, hint or None)
    if row is None:
        st.warning("No such event in the ledger.")
        return
    st.code(event_id, language=None)
    st.subheader("Fields (PII masked)")
    st.json(record_for_display(row), expanded=True)

    st.subheader("Chain neighbours")
    seq = int(row["seq"])
    nb = core.query("SELECT seq, event_id, event_type, occurred_at, event_date, hash FROM events "
                    "WHERE seq IN (?, ?, ?) ORDER BY seq", (seq - 1, seq, seq + 1))
    core.show_table(nb, key="event_neighbours")
    cols = st.columns(2)
    for col, s, label in ((cols[0], seq - 1, "Previous event"), (cols[1], seq + 1, "Next event")):
        m = nb[nb["seq"] == s]
        if len(m):
            col.button(f"{label} (seq {s})", key=f"nb_{s}", on_click=core.goto, args=("Event",),
                       kwargs={"event_id": m.iloc[0]["event_id"], "event_date_hint": m.iloc[0]["event_date"],
                               "proof_result": None})

    st.subheader("Inclusion proof")
    try:
        doc = _proof(core.explorer().lake.uri, event_id, dict(core.versions()).get("checkpoints"))
    except ImportError:
        st.info("Inclusion proofs are not available in this installation.")
        return
    except Exception as exc:  # noqa: BLE001 - e.g. the event is not covered by a checkpoint yet
        st.warning("No inclusion proof for this event yet.")
        st.code(str(exc)[:500], language=None)
        return
    st.text(f"leaf {doc.get('leaf_index')} of a tree of {doc.get('tree_size')}; audit path of "
            f"{len(doc.get('proof') or [])} hashes; root {str(doc.get('root'))[:16]}…")
    st.json(proof_summary(doc), expanded=False)
    st.download_button("Download proof (JSON)", json.dumps(doc, indent=2, default=str),
                       file_name=f"proof-{event_id}.json", mime="application/json", key="proof_dl")
    if st.button("Verify this event", key="verify_event", type="primary"):
        try:
            st.session_state["proof_result"] = (event_id, *check_proof(doc, row))
        except Exception as exc:  # noqa: BLE001
            st.session_state["proof_result"] = (event_id, False, f"check failed: {exc.__class__.__name__}")
    res = st.session_state.get("proof_result")
    if res and res[0] == event_id:
        if res[1]:
            st.success("Verified: this event is in the signed, tamper-evident log.")
        else:
            st.error("Proof check FAILED.")
        st.code(str(res[2]), language=None)
    if user["role"] == "privacy_officer" and row.get("subject_id"):
        st.button("Reveal this subject's PII…", key="event_reveal", on_click=core.goto, args=("Privacy",),
                  kwargs={"reveal_subject": row["subject_id"]})
