"""The HMAC hash chain: hash_i = HMAC-SHA-256(K, hash_{i-1} || leaf_i), hash_{-1} = 32 zero bytes."""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

GENESIS = bytes(32)


def link(key: bytes, prev: bytes, leaf: bytes) -> bytes:
    return hmac.new(key, prev + leaf, hashlib.sha256).digest()


def extend(keys: Mapping[str, bytes], prev: bytes, items: Iterable[tuple[str, bytes]]) -> list[bytes]:
    """Chain hashes for (key_id, leaf) items following `prev`."""
    out = []
    for key_id, leaf in items:
        prev = hmac.new(keys[key_id], prev + leaf, hashlib.sha256).digest()
        out.append(prev)
    return out


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA-256 inner and outer padded keys, so HMAC = SHA256(opad || SHA256(ipad || m))
    can be computed by a vectorised SHA-256 (DuckDB) during verification."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
