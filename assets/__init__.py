"""Thin Dagster assets over the auditlake engine.

landing_files (observed source) -> ledger (daily partitioned ingest) -> checkpoints (verified)
-> compliance_findings -> duckdb_catalog -> export_bundle, plus quarantine (daily) beside the
ledger. The blocking `integrity` check on the ledger gates everything downstream.
"""
from .compliance import compliance_findings
from .ingest import landing_files, ledger, quarantine
from .integrity import checkpoints, ledger_integrity
from .partitions import DAILY
from .serving import duckdb_catalog, export_bundle

ALL_ASSETS = [landing_files, ledger, quarantine, checkpoints, compliance_findings, duckdb_catalog, export_bundle]

__all__ = [
    "ALL_ASSETS",
    "DAILY",
    "checkpoints",
    "compliance_findings",
    "duckdb_catalog",
    "export_bundle",
    "landing_files",
    "ledger",
    "ledger_integrity",
    "quarantine",
]
