"""RFC 6962 / RFC 9162 Merkle tree primitives for the auditlake ledger (LEDGER.md section 6).

Pure functions, no I/O.  ``hashlib`` hashes single nodes; many at once (``leaf_hashes``,
``Frontier.extend``) go to the batch hasher (``_sha256.c``, OpenSSL, one call per level).

Conventions (as in transparency-dev/merkle):

* A hash is a raw 32-byte SHA-256 digest.
* ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``,
  the empty tree's root is ``SHA-256("")``.
* A node id is ``(level, index)``: the *perfect* subtree of ``2**level`` leaves covering
  leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 nodes are the leaf hashes.
  Only perfect subtrees are ever stored; the non-perfect ("ephemeral") nodes of the ragged
  right edge of a tree are recomputed from perfect ones.
* Tree sizes and indices are ints in ``[0, 2**64)`` (RFC 9162 uses uint64).
* Proofs are lists of hashes ordered from the leaf (bottom) up to the root, exactly the
  RFC 9162 ``inclusion_path`` / ``consistency_path``.

Proof generators raise ``ValueError`` on invalid arguments.  Verifiers never raise: any
malformed input (wrong types, wrong hash lengths, out-of-range sizes, wrong proof length)
makes them return ``False``.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from . import _sha256 as batch
from . import packed

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "Frontier",
    "GetNode",
    "consistency_proof",
    "consistency_proof_from",
    "inclusion_proof",
    "inclusion_proof_from",
    "leaf_hash",
    "leaf_hashes",
    "node_hash",
    "root_from",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
MAX_TREE_SIZE = (1 << 64) - 1

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT: bytes = _sha256(b"").digest()

GetNode = Callable[[int, int], bytes]
"""``get_node(level, index) -> bytes``: hash of the perfect subtree ``(level, index)``."""


# ---------------------------------------------------------------------------
# Hashing


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || leaf)."""
    return _sha256(_LEAF_PREFIX + _as_bytes(leaf)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right) (any input lengths)."""
    return _sha256(_NODE_PREFIX + _as_bytes(left) + _as_bytes(right)).digest()


# ---------------------------------------------------------------------------
# Small helpers (node-id arithmetic)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected bytes, not {type(value).__name__}")


def _as_hash(value: object) -> bytes:
    """Return ``value`` as 32 bytes, or raise ValueError/TypeError."""
    if isinstance(value, bytes):
        h = value
    elif isinstance(value, (bytearray, memoryview)):
        h = bytes(value)
    else:
        raise TypeError(f"hash must be bytes, not {type(value).__name__}")
    if len(h) != HASH_SIZE:
        raise ValueError(f"hash must be {HASH_SIZE} bytes, got {len(h)}")
    return h


def _as_size(value: object) -> int:
    """Return ``value`` as an int in [0, 2**64), or raise ValueError/TypeError (bool rejected)."""
    if isinstance(value, bool):
        raise TypeError("a tree size or index must be an int, not bool")
    v = operator.index(value)  # accepts numpy ints, rejects floats/str
    if not 0 <= v <= MAX_TREE_SIZE:
        raise ValueError(f"{v} is outside [0, 2**64)")
    return v


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def _inclusion_decomp(index: int, size: int) -> tuple[int, int]:
    """Split the inclusion path of ``index`` in a tree of ``size`` (0 <= index < size).

    ``inner`` is the number of levels below the point where the paths to ``index`` and to
    ``size - 1`` meet (each contributes one sibling); ``border`` is the number of left
    siblings above that point.  The proof length is ``inner + border``.
    """
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _consistency_proof_len(m: int, n: int) -> int:
    """Length of the RFC 9162 consistency proof for 0 < m < n."""
    inner, border = _inclusion_decomp(m - 1, n)
    shift = _trailing_zeros(m)
    return (0 if m == 1 << shift else 1) + inner - shift + border


def _frontier_levels(size: int) -> list[int]:
    """Levels of the perfect subtrees making up a tree of ``size``, largest first."""
    return [lv for lv in range(size.bit_length() - 1, -1, -1) if size >> lv & 1]


# ---------------------------------------------------------------------------
# Frontier (compact range [0, size))


@dataclass(frozen=True)
class Frontier:
    """The compact range ``[0, size)``: roots of the perfect subtrees of a tree of ``size``.

    ``hashes[i]`` is node ``(level, (size >> level) - 1)`` for the i-th set bit ``level`` of
    ``size`` counted from the most significant one (largest subtree first).  This is all the
    state needed to append leaves and to compute the root, O(log n) hashes.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        size = _as_size(self.size)
        hashes = tuple(_as_hash(h) for h in self.hashes)
        if len(hashes) != bin(size).count("1"):
            raise ValueError(
                f"a frontier of size {size} has {bin(size).count('1')} hashes, got {len(hashes)}"
            )
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "hashes", hashes)

    @classmethod
    def empty(cls) -> Frontier:
        return cls(0, ())

    def nodes(self) -> list[tuple[int, int, bytes]]:
        """The frontier entries as ``(level, index, hash)``, largest subtree first."""
        return [
            (lv, (self.size >> lv) - 1, h)
            for lv, h in zip(_frontier_levels(self.size), self.hashes)
        ]

    def root(self) -> bytes:
        """RFC 6962 root of the ``size`` leaves: fold the subtrees from the right."""
        if not self.hashes:
            return EMPTY_ROOT
        acc = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            acc = _sha256(_NODE_PREFIX + h + acc).digest()
        return acc

    def extend(
        self,
        leaf_hashes: bytes | Iterable[bytes],
        *,
        min_level: int = 0,
        on_node: Callable[[int, int, bytes], None] | None = None,
    ) -> Frontier:
        """Return the frontier after appending ``leaf_hashes``: 32-byte leaf hashes, or one
        bytes-like object of them packed (concatenated).

        Work is linear: each level is paired in one batch-hasher call (about one node hash
        per appended leaf), so a million hashes in one call is fine.

        If ``on_node`` is given it is called as ``on_node(level, index, hash)`` once for every
        perfect subtree completed by this append whose ``level >= min_level`` (level 0 are
        the new leaf hashes themselves), in ascending ``(level, index)`` order.  Over any
        sequence of appends each perfect node of the final tree is reported exactly once,
        so a caller can persist inner nodes ("tiles") for ``*_proof_from``.
        """
        if isinstance(leaf_hashes, (bytes, bytearray, memoryview)):
            row = bytes(leaf_hashes)
            if len(row) % HASH_SIZE:
                raise ValueError(f"packed leaf hashes must be a multiple of {HASH_SIZE} bytes")
        else:
            hashes = list(leaf_hashes)
            if hashes and set(map(type, hashes)) != {bytes}:
                hashes = [_as_hash(h) for h in hashes]
            if hashes and set(map(len, hashes)) != {HASH_SIZE}:
                raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes each")
            row = b"".join(hashes)
        old_size = self.size
        new_size = old_size + len(row) // HASH_SIZE
        if new_size > MAX_TREE_SIZE:
            raise ValueError("tree size would exceed 2**64 - 1")
        if on_node is not None:
            min_level = _as_size(min_level)
        old = dict(zip(_frontier_levels(old_size), self.hashes))
        kept: dict[int, bytes] = {}
        level = 0
        # Invariant: ``row`` packs the nodes of ``level`` completed by this append, the first
        # one with index ``old_size >> level``.
        while row or old_size >> level:
            first = old_size >> level
            if on_node is not None and level >= min_level:
                for i, at in enumerate(range(0, len(row), HASH_SIZE), first):
                    on_node(level, i, row[at:at + HASH_SIZE])
            if first & 1:  # the old frontier holds the left sibling of the first node
                row = old[level] + row
            if len(row) // HASH_SIZE & 1:  # the last node has no right sibling yet: it joins the frontier
                kept[level] = row[-HASH_SIZE:]
                row = row[:-HASH_SIZE]
            row = batch.node_hashes(row)
            level += 1
        return Frontier(new_size, tuple(kept[lv] for lv in _frontier_levels(new_size)))

    def to_hex(self) -> list[str]:
        return [h.hex() for h in self.hashes]

    @classmethod
    def from_hex(cls, size: int, hashes: Sequence[str]) -> Frontier:
        """Inverse of ``to_hex``; only canonical lowercase 64-digit hex is accepted."""
        out = []
        for h in hashes:
            if not isinstance(h, str) or not _HEX64.fullmatch(h):
                raise ValueError(f"not a lowercase 64-digit hex hash: {h!r}")
            out.append(bytes.fromhex(h))
        return cls(size, tuple(out))


_HEX64 = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------
# Roots


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash of the given leaf hashes (empty -> ``EMPTY_ROOT``)."""
    return Frontier.empty().extend(hashes).root()


def _range_root(begin: int, end: int, get_node: GetNode) -> bytes:
    """Root of leaves [begin, end) where ``begin`` is a multiple of 2**bit_length(end-begin).

    Such a range is the concatenation of perfect subtrees, one per set bit of ``end-begin``
    (largest first); asks for those popcount(end - begin) nodes, smallest (rightmost) first,
    and folds them from the right.  Used for the ragged right edge of a tree.
    """
    ids = []
    pos = begin
    for lv in _frontier_levels(end - begin):
        ids.append((lv, pos >> lv))
        pos += 1 << lv
    acc = _get(get_node, *ids[-1])
    for lv, idx in reversed(ids[:-1]):
        acc = node_hash(_get(get_node, lv, idx), acc)
    return acc


def _get(get_node: GetNode, level: int, index: int) -> bytes:
    h = get_node(level, index)
    try:
        return _as_hash(h)
    except (TypeError, ValueError) as e:
        raise ValueError(f"get_node({level}, {index}) returned a bad hash: {e}") from None


def root_from(size: int, get_node: GetNode) -> bytes:
    """RFC 6962 root of a tree of ``size`` from stored perfect nodes.

    Asks for the popcount(size) frontier nodes ``(level, (size >> level) - 1)``.
    """
    size = _as_size(size)
    if size == 0:
        return EMPTY_ROOT
    return _range_root(0, size, get_node)


# ---------------------------------------------------------------------------
# Inclusion proofs


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PATH(index, D[n]) for a tree of n = len(leaf_hashes) leaves, bottom-up.

    A direct, O(n) transcription of the RFC's recursive definition; use
    ``inclusion_proof_from`` with stored nodes for large trees.
    """
    n = len(leaf_hashes)
    index = _as_size(index)
    if index >= n:
        raise ValueError(f"leaf index {index} out of range for tree size {n}")
    top_down = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = 1 << (hi - lo - 1).bit_length() - 1  # largest power of two < hi - lo
        if index < lo + k:
            top_down.append(root_from_leaf_hashes(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            top_down.append(root_from_leaf_hashes(leaf_hashes[lo : lo + k]))
            lo += k
    return top_down[::-1]


def _path_from(level: int, index: int, size: int, get_node: GetNode) -> list[bytes]:
    """Inclusion path of the perfect node (level, index) in a tree of ``size``, bottom-up.

    Nodes asked for, in order:

    * for each of the ``inner`` levels below the point where the path meets the path to the
      last leaf: the sibling ``(lv, (index >> i) ^ 1)``; if that sibling runs past ``size``
      (only possible for the topmost one) it is the ephemeral right-edge node and its
      popcount perfect parts are asked for instead (see ``_range_root``);
    * above that point, the left sibling ``(lv, a - 1)`` at every level whose ancestor index
      ``a`` is odd (an even ancestor there has no right sibling: it is promoted).

    At most ``2 * bit_length(size)`` calls.
    """
    last = (size - 1) >> level
    inner = (index ^ last).bit_length()
    proof = []
    for i in range(inner):
        lv = level + i
        sib = (index >> i) ^ 1
        begin = sib << lv
        if begin + (1 << lv) <= size:
            proof.append(_get(get_node, lv, sib))
        else:
            proof.append(_range_root(begin, size, get_node))
    a = index >> inner
    lv = level + inner
    while a:
        if a & 1:
            proof.append(_get(get_node, lv, a - 1))
        a >>= 1
        lv += 1
    return proof


def inclusion_proof_from(index: int, size: int, get_node: GetNode) -> list[bytes]:
    """Inclusion proof for leaf ``index`` in a tree of ``size`` from stored perfect nodes.

    ``get_node(level, idx)`` must return the hash of perfect subtree (level, idx); it is only
    asked for nodes fully inside ``[0, size)``, each at most once, at most
    ``2 * bit_length(size)`` times (see ``_path_from`` for which nodes).
    """
    index, size = _as_size(index), _as_size(size)
    if index >= size:
        raise ValueError(f"leaf index {index} out of range for tree size {size}")
    return _path_from(0, index, size, get_node)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2: does ``proof`` show ``leaf_hash`` at ``index`` under ``root``?

    Returns False (never raises) on any malformed input, on ``index >= size`` and on a proof
    whose length is not exactly the one the tree shape requires.
    """
    try:
        r = _as_hash(leaf_hash)
        root = _as_hash(root)
        fn, size = _as_size(index), _as_size(size)
        if isinstance(proof, (str, bytes, bytearray, memoryview)):
            return False
        path = [_as_hash(p) for p in proof]
    except Exception:  # malformed input of any kind
        return False
    if fn >= size:
        return False
    if len(path) != sum(_inclusion_decomp(fn, size)):
        return False
    sn = size - 1
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            while fn and not fn & 1:  # fn == sn on the right border: skip promoted levels
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


# ---------------------------------------------------------------------------
# Consistency proofs


def consistency_proof(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PROOF(m, D[n]) for n = len(leaf_hashes), bottom-up.

    ``m == 0`` and ``m == n`` give ``[]`` (see ``verify_consistency``).  A direct, O(n)
    transcription of the RFC's SUBPROOF recursion.
    """
    n = len(leaf_hashes)
    m = _as_size(m)
    if m > n:
        raise ValueError(f"old size {m} > new size {n}")
    if m == 0 or m == n:
        return []
    top_down = []
    lo, hi = 0, n
    complete = True  # the RFC's flag b: the subtree D[lo:lo+m] is a node of the old tree
    while m != hi - lo:
        k = 1 << (hi - lo - 1).bit_length() - 1
        if m <= k:
            top_down.append(root_from_leaf_hashes(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            top_down.append(root_from_leaf_hashes(leaf_hashes[lo : lo + k]))
            lo += k
            m -= k
            complete = False
    if not complete:
        top_down.append(root_from_leaf_hashes(leaf_hashes[lo:hi]))
    return top_down[::-1]


def consistency_proof_from(m: int, n: int, get_node: GetNode) -> list[bytes]:
    """Consistency proof from size ``m`` to size ``n`` from stored perfect nodes.

    Asks for the largest perfect subtree ending at leaf m, ``(tz, (m >> tz) - 1)`` with
    ``tz`` = trailing zeros of m (skipped when m is a power of two: the verifier uses
    root_m), then for its inclusion path in the tree of size n (see ``_path_from``):
    at most ``2 * bit_length(n) + 1`` calls.
    """
    m, n = _as_size(m), _as_size(n)
    if m > n:
        raise ValueError(f"old size {m} > new size {n}")
    if m == 0 or m == n:
        return []
    level = _trailing_zeros(m)
    index = (m >> level) - 1
    head = [] if index == 0 else [_get(get_node, level, index)]
    return head + _path_from(level, index, n, get_node)


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree (n, root_n) an append-only extension of (m, root_m)?

    Special cases (our choices, following transparency-dev/merkle where it is defined):

    * ``m > n``: False.
    * ``m == n``: True iff the proof is empty and ``root_m == root_n``.
    * ``m == 0``: True iff the proof is empty and ``root_m == EMPTY_ROOT`` (for ``m == n ==
      0`` both roots must be ``EMPTY_ROOT``).  The empty tree is a prefix of every tree, so
      nothing about ``root_n`` can be checked beyond its being a 32-byte hash.  This is the
      historical transparency-dev / certificate-transparency-go behaviour ("sizes that are
      always consistent"), except that those accepted any root_m; current transparency-dev
      rejects m == 0 outright as meaningless.
    * Otherwise the RFC algorithm, after checking the proof has exactly the expected length.

    Never raises; malformed input gives False.
    """
    try:
        m, n = _as_size(m), _as_size(n)
        root_m, root_n = _as_hash(root_m), _as_hash(root_n)
        if isinstance(proof, (str, bytes, bytearray, memoryview)):
            return False
        path = [_as_hash(p) for p in proof]
    except Exception:  # malformed input of any kind
        return False
    if m > n:
        return False
    if m == 0:
        return not path and root_m == EMPTY_ROOT and (n > 0 or root_n == EMPTY_ROOT)
    if m == n:
        return not path and hmac.compare_digest(root_m, root_n)
    if not path or len(path) != _consistency_proof_len(m, n):
        return False
    if m & (m - 1) == 0:  # m is a power of two: root_m is the first node
        path = [root_m, *path]
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            while fn and not fn & 1:  # fn == sn on the right border: skip promoted levels
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(fr, root_m) and hmac.compare_digest(sr, root_n)


# ---------------------------------------------------------------------------
# Batches (arrow arrays, packed hashes)


def leaf_hashes(leaves) -> bytes:
    """RFC 6962 leaf hashes of a pyarrow (Chunked)Array of binary or string leaves (strings
    hashed as UTF-8), packed: n concatenated 32-byte digests, in order. Nulls are rejected."""
    if leaves.null_count:
        raise ValueError("leaves must not contain nulls")
    views = packed.views(leaves)
    if views is not None:  # hashed in place: no copy of the rows
        return b"".join(batch.leaf_hashes_views(v, data) for v, data in views)
    return b"".join(batch.leaf_hashes(data, offsets) for data, offsets in packed.buffers(leaves))
