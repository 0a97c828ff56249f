"""Sealing personal data: per-subject AES-256-GCM and a keyed blind index of phones."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEAL_PREFIX = "k1."
BIDX_PREFIX = "b1."


def seal(cipher: AESGCM, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(12)
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


def aad(event_id: str, part: str) -> bytes:
    return f"{event_id}|{part}".encode()


def blind_index(key: bytes, phone: str) -> str:
    return BIDX_PREFIX + hmac.new(key, phone.encode(), hashlib.sha256).hexdigest()
