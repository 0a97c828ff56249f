"""Exports: build a redacted export bundle (signed manifest) and download it as a zip.
The bundle is written to a fresh temporary folder; no user text reaches a file path, and
the download name is made of [A-Za-z0-9._-] only."""
from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import streamlit as st

from auditlake.catalog import safe_filename
from auditlake.contract import EVENT_TYPES
from dashboards import core

FORMATS = ("parquet", "csv", "jsonl")


def zip_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink():
                z.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


def render(user: dict) -> None:
    st.header("Exports")
    st.caption("A redacted bundle (PII sealed or removed per the default profile) with a signed manifest; "
               "check it offline with `auditlake verify-export DIR`.")
    rng = core.time_range("export")
    c1, c2 = st.columns(2)
    types = c1.multiselect("Event type", sorted(EVENT_TYPES), key="export_types")
    tenant = c2.text_input("Tenant", key="export_tenant").strip()
    formats = st.multiselect("Formats", FORMATS, default=["parquet"], key="export_formats")
    if rng is None or not formats:
        st.info("Choose a time range and at least one format.")
        return
    if st.button("Build export", key="export_build", type="primary"):
        try:
            from auditlake.export import build_export
        except ImportError:
            st.error("Exports are not available in this installation.")
            return
        filters = {"time_from": rng[0].isoformat().replace("+00:00", "Z"),
                   "time_to": rng[1].isoformat().replace("+00:00", "Z"),
                   "event_type": list(types), "tenant": [tenant] if tenant else [], "subject": []}
        tmp = Path(tempfile.mkdtemp(prefix="auditlake-export-"))
        try:
            out = tmp / "bundle"
            with st.spinner("Building the export…"):
                manifest = build_export(core.explorer().lake, str(out), list(formats), filters, profile="default",
                                        actor=user["user"])
            data = zip_dir(out)
        except Exception as exc:  # noqa: BLE001
            st.error("The export failed.")
            st.code(f"{exc.__class__.__name__}: {str(exc)[:500]}", language=None)
            return
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        manifest = manifest if isinstance(manifest, dict) else getattr(manifest, "__dict__", {})
        export_id = str(manifest.get("export_id") or manifest.get("id") or "bundle")
        st.session_state["export_result"] = {
            "name": safe_filename(f"auditlake-export-{export_id}", "auditlake-export") + ".zip",
            "data": data,
            "summary": {k: v for k, v in manifest.items() if k in ("export_id", "rows", "formats", "profile", "created_at", "files")},
        }
    res = st.session_state.get("export_result")
    if res:
        st.success("Export built.")
        st.json(res["summary"], expanded=False)
        st.download_button("Download bundle (.zip)", res["data"], file_name=res["name"], mime="application/zip",
                           key="export_download")
