"""The HMAC hash chain: hash_i = HMAC-SHA-256(K, hash_{i-1} || leaf_i), hash_{-1} = 32 zero bytes.

Batches go to the batch hasher (_sha256.c): leaves as an arrow binary or string array
(strings as UTF-8), hashes packed (n concatenated 32-byte digests)."""
from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Mapping, Sequence

import pyarrow as pa

from . import _sha256 as batch
from . import packed

GENESIS = bytes(32)


def link(key: bytes, prev: bytes, leaf: bytes) -> bytes:
    return hmac.new(key, prev + leaf, hashlib.sha256).digest()


def extend(keys: Mapping[str, bytes], prev: bytes, key_ids: Sequence[str], leaves: pa.Array | pa.ChunkedArray) -> bytes:
    """The packed chain hashes of `leaves` following `prev`, leaf i linked with the key
    keys[key_ids[i]] (a rotation changes the key mid-chain)."""
    if leaves.null_count:
        raise ValueError("leaves must not contain nulls")
    if isinstance(leaves, pa.ChunkedArray):
        leaves = leaves.combine_chunks()
    if len(key_ids) != len(leaves):
        raise ValueError("one key id per leaf")
    out, start = [], 0
    for key_id, run in itertools.groupby(key_ids):  # runs of one key, found in C
        end = start + len(list(run))
        for data, offsets in packed.buffers(leaves.slice(start, end - start)):
            links = batch.hmac_chain(keys[key_id], prev, data, offsets)
            out.append(links)
            prev = links[-packed.HASH_SIZE:]
        start = end
    return b"".join(out)


def links(key: bytes, prevs: bytes, leaves: pa.Array) -> bytes:
    """HMAC-SHA-256(key, prevs[i] || leaf i) of each leaf, packed: links checked one by one
    against given previous hashes (packed), as a verifier reading rows in any order does."""
    parts, at = [], 0
    for data, offsets in packed.buffers(leaves):
        n = len(offsets) - 1
        parts.append(batch.hmacs(key, prevs[at:at + packed.HASH_SIZE * n], data, offsets))
        at += packed.HASH_SIZE * n
    if at != len(prevs):
        raise ValueError("one previous hash per leaf")
    return b"".join(parts)
