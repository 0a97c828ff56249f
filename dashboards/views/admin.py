"""Admin: users, the catalog file and an on-demand verification."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from auditlake.catalog import build_catalog, default_db_path, users_path
from dashboards import core


def render(user: dict) -> None:
    st.header("Admin")
    ex = core.explorer()
    st.subheader("Users")
    st.text(f"users file: {users_path()}")
    u = core.users()
    core.show_table(pd.DataFrame([{"user": n, "role": v["role"]} for n, v in sorted(u["users"].items())]), key="adm_users")
    st.caption("Add users with: python -m auditlake.catalog add-user NAME ROLE")

    st.subheader("Catalog")
    st.text(f"explorer reads: {ex.source}")
    if not ex.lake.is_s3:
        st.text(f"catalog file: {default_db_path(ex.lake)}")
    if st.button("Rebuild the catalog file", key="adm_catalog"):
        try:
            doc = build_catalog(ex.lake)
            st.success("Catalog written.")
            st.json({k: doc[k] for k in ("db", "mode", "counts")})
        except Exception as exc:  # noqa: BLE001
            st.error("Catalog build failed.")
            st.code(f"{exc.__class__.__name__}: {str(exc)[:500]}", language=None)

    st.subheader("Verify the ledger now")
    st.caption("Runs the full check (chains, Merkle roots, signatures, history); it reads the whole ledger.")
    if st.button("Verify", key="adm_verify"):
        from auditlake.verify import verify

        with st.spinner("Verifying…"):
            report = verify(ex.lake)
        (st.success if report.ok else st.error)("intact" if report.ok else f"{len(report.findings)} finding(s)")
        st.json(report.to_dict(), expanded=False)
