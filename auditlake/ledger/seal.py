"""Sealing personal data: per-subject AES-256-GCM and a keyed blind index of phones."""
from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEAL_PREFIX = "k1."
BIDX_PREFIX = "b1."


class Nonces:
    """Fresh random 96-bit GCM nonces, drawn from the OS in blocks (one system call per 1,024).
    A forked child never reuses its parent's block: a repeated nonce would break GCM."""

    _BLOCK = 1024

    def __init__(self):
        self._pool, self._at, self._pid = b"", 0, os.getpid()

    def take(self) -> bytes:
        if self._at >= len(self._pool) or self._pid != os.getpid():
            self._pool, self._at, self._pid = os.urandom(12 * self._BLOCK), 0, os.getpid()
        self._at += 12
        return self._pool[self._at - 12:self._at]


def seal(cipher: AESGCM, plaintext: bytes, aad: bytes, nonce: bytes) -> str:
    """AES-256-GCM under `nonce`, a fresh random one (from a Nonces pool)."""
    return SEAL_PREFIX + base64.urlsafe_b64encode(nonce + cipher.encrypt(nonce, plaintext, aad)).decode()


def unseal(key: bytes, sealed: str, aad: bytes) -> bytes | None:
    """The plaintext, or None if the key cannot open it (wrong key or tampered)."""
    if not sealed.startswith(SEAL_PREFIX):
        return None
    raw = base64.urlsafe_b64decode(sealed[len(SEAL_PREFIX):])
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], aad)
    except InvalidTag:
        return None


def ip_owner(actor_type: str | None, actor_id: str, subject_id: str | None) -> str:
    """Whose data key seals `actor.ip`: the actor's own when a user acts (an employee's
    address) or the event has no subject; else the subject's, as a service or system that
    reports an address on a person's event (a web form's visitor) has none of its own.
    Erasing that person shreds it. IP_OWNER_SQL and ip_owner_expr() say the same."""
    return actor_id if actor_type == "user" or not subject_id else subject_id


IP_OWNER_SQL = "CASE WHEN actor_type = 'user' OR subject_id IS NULL OR subject_id = '' THEN actor_id ELSE subject_id END"


def ip_owner_expr():
    """ip_owner as a polars expression over the ledger's columns."""
    import polars as pl

    actor_keeps = (pl.col("actor_type") == "user").fill_null(False) | pl.col("subject_id").is_null() | (pl.col("subject_id") == "")
    return pl.when(actor_keeps).then(pl.col("actor_id")).otherwise(pl.col("subject_id"))


def aad(event_id: str, part: str) -> bytes:
    return f"{event_id}|{part}".encode()


def blind_indexes(key: bytes, phones: list[str | None]) -> list[str | None]:
    """The keyed blind index "b1." + hex HMAC-SHA-256(key, phone) of each phone (None stays
    None), computed by the batch hasher in one call."""
    import numpy as np
    import pyarrow as pa

    from ._sha256 import hmacs

    present = [p for p in phones if p is not None]
    if not present:
        return list(phones)
    arr = pa.array(present, pa.large_binary())
    digests = hmacs(key, b"", arr.buffers()[2] or b"", np.frombuffer(arr.buffers()[1], np.int64))
    hexed = binascii.hexlify(digests).decode()
    found = iter(BIDX_PREFIX + hexed[i:i + 64] for i in range(0, len(hexed), 64))
    return [None if p is None else next(found) for p in phones]
