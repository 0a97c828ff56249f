"""Privacy officer: reveal one data subject's PII after typing a reason; every reveal is
itself recorded as an audit event (auditlake.privacy.reveal_subject)."""
from __future__ import annotations

import streamlit as st

from auditlake.privacy import MIN_REASON, visible_length
from dashboards import core


def render(user: dict) -> None:
    st.header("Reveal a data subject's PII")
    st.caption("Only for a documented purpose (e.g. a subject access request). The reveal, your name and your "
               "reason are written to the audit log.")
    subject = st.text_input("Subject id", key="reveal_subject").strip()
    reason = st.text_area("Reason (required)", key="reveal_reason").strip()
    ok = bool(subject) and visible_length(reason) >= MIN_REASON
    if st.button("Reveal", key="reveal_go", disabled=not ok, type="primary"):
        try:
            from auditlake.privacy import reveal_subject
        except ImportError:
            st.error("Revealing PII is not available in this installation.")
            return
        try:
            rows = reveal_subject(core.explorer().lake, subject, reason, user["user"])
        except Exception as exc:  # noqa: BLE001
            st.error("The reveal failed.")
            st.code(f"{exc.__class__.__name__}: {str(exc)[:500]}", language=None)
            return
        st.session_state["revealed"] = (subject, rows)
    if not ok:
        st.caption(f"Enter a subject id and a reason of at least {MIN_REASON} visible characters.")
    res = st.session_state.get("revealed")
    if res:
        subject_id, rows = res
        st.warning("Personal data below: do not copy it outside the case file.")
        st.text(f"subject {subject_id}: {len(rows)} event(s)")
        import pandas as pd

        core.show_table(pd.DataFrame(rows).astype(str) if rows else pd.DataFrame(), key="reveal_rows", masked=False)
        st.button("Hide", key="reveal_hide", on_click=lambda: st.session_state.pop("revealed", None))
