"""Signed commits of the tables whose rows no chain or checkpoint seals (quarantine, ingest
log, findings, incidents). Each commit the lake makes to one carries, in its Delta
commitInfo, the digest of the rows it adds and an Ed25519 signature binding that digest to
the log, the table and the commit's version: a commit anyone else appends, or a data file
swapped under one, no longer matches."""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonical_json

# The commitInfo keys (delta-rs puts custom commit metadata at the top of commitInfo).
ROWS, SIGNATURE, KEY_ID = "auditlake_rows", "auditlake_signature", "auditlake_key_id"


def rows_digest(rows: Iterable[Sequence]) -> str:
    """SHA-256 of the sorted SHA-256 hashes of the rows (each the compact JSON array of its
    values in the table's column order; instants as UTC YYYY-MM-DDTHH:MM:SS[.ffffff]Z, other
    non-JSON values as str). The order of the rows, and so how a writer splits them into
    files, does not count."""
    hashes = sorted(
        hashlib.sha256(orjson.dumps(list(row), default=str, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)).digest()
        for row in rows
    )
    return hashlib.sha256(b"".join(hashes)).hexdigest()


def commit_body(log_id: str, table: str, version: int, digest: str, key_id: str) -> bytes:
    """The signed bytes: JCS of the commit's log, table, version, rows digest and key id."""
    return canonical_json({"log_id": log_id, "table": table, "version": version, "rows": digest, "key_id": key_id})


def sign(key: Ed25519PrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body)).decode()


def signature_valid(public_key: Ed25519PublicKey, signature: str, body: bytes) -> bool:
    try:
        public_key.verify(base64.b64decode(signature, validate=True), body)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
