"""auditlake explorer: `auditlake explore` or
`AUDITLAKE_LAKE=/path/to/lake streamlit run dashboards/app.py` (see docs/EXPLORER.md)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

# `streamlit run dashboards/app.py` puts dashboards/ itself on sys.path; make the package
# importable as `dashboards` even without an installed copy.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(1, _ROOT)

import streamlit as st  # noqa: E402

from auditlake.errors import AuditlakeError  # noqa: E402
from dashboards import core  # noqa: E402

MODULES = {
    "Overview": "overview",
    "Search": "search",
    "Event": "event",
    "Compliance": "compliance",
    "Exports": "exports",
    "SQL": "sql",
    "Privacy": "privacy",
    "Admin": "admin",
}


def main() -> None:
    st.set_page_config(page_title="auditlake explorer", layout="wide")
    try:
        user = core.current_user()
        if user is None:
            core.login_screen()
            return
    except AuditlakeError as exc:  # the users file cannot be trusted or read
        st.error("Sign-in is unavailable.")
        st.code(str(exc)[:500], language=None)
        return
    pages = [p for p, roles in core.PAGES.items() if user["role"] in roles]
    if st.session_state.get("page") not in pages:
        st.session_state["page"] = pages[0]
    with st.sidebar:
        st.text(f"{user['user']}\n{core.ROLE_LABELS.get(user['role'], user['role'])}")
        page = st.radio("Page", pages, key="page")
        st.button("Sign out", key="logout", on_click=core.logout)
    try:
        ex = core.explorer()
    except Exception as exc:  # noqa: BLE001
        st.error("Cannot open the lake.")
        st.code(f"{exc.__class__.__name__}: {str(exc)[:500]}", language=None)
        return
    st.sidebar.text(f"lake: {ex.lake.uri}")
    if not core.allowed(user["role"], page):  # never trust the widget state alone
        page = pages[0]
    module = importlib.import_module(f"dashboards.views.{MODULES[page]}")
    try:
        module.render(user)
    except Exception as exc:  # noqa: BLE001 - Streamlit's own reruns and stops are no Exception
        core.show_failure(exc)


main()
