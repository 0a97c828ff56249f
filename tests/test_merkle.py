"""Tests for auditlake.ledger.merkle (RFC 6962 / RFC 9162 Merkle trees).

Reference vectors are the ones used by transparency-dev/merkle (proof/verify_test.go,
proof/proof_test.go, rfc6962/rfc6962_test.go), which come from certificate-transparency-go:
eight leaves, the roots of every prefix, inclusion and consistency proofs, and the node ids
a proof is built from.  Every verifier is also fed the corrupted variants of every vector
(the transparency-dev probe lists), all of which must be rejected.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import FrozenInstanceError

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditlake.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    consistency_proof_from,
    inclusion_proof,
    inclusion_proof_from,
    leaf_hash,
    leaf_hashes,
    node_hash,
    root_from,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

PROPS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def dh(s: str) -> bytes:
    return bytes.fromhex(s)


# ----------------------------------------------------------------------------- reference vectors

LEAVES = [
    dh(""),
    dh("00"),
    dh("10"),
    dh("2021"),
    dh("3031"),
    dh("40414243"),
    dh("5051525354555657"),
    dh("606162636465666768696a6b6c6d6e6f"),
]
LEAF_HASHES = [leaf_hash(x) for x in LEAVES]

# ROOTS[i] is the root of the first i + 1 leaves.
ROOTS = [
    dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    dh("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    dh("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    dh("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    dh("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    dh("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

SOME_HASH = dh("abacaba000000000000000000000000000000000000000000060061e00123456")

# (leaf index, 0-based; tree size; proof).  transparency-dev lists 1-based leaf numbers.
INCLUSION_VECTORS = [
    (0, 1, []),
    (0, 8, [
        dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (5, 8, [
        dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
    (2, 3, [
        dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    ]),
    (1, 5, [
        dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
]

# (size1, size2, proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (1, 8, [
        dh("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        dh("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ]),
    (6, 8, [
        dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        dh("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
    (2, 5, [
        dh("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        dh("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ]),
    (6, 7, [
        dh("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        dh("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ]),
]

# Node ids (level, index) a proof is made of, in proof order; a ragged right-edge node is
# listed as its perfect parts, smallest first (transparency-dev proof_test.go, whose
# "rehash" ranges are exactly those parts).  The running example is the tree of size 7:
#
#                hash              <== Level 3
#               /    \
#              k      l            <== Level 2
#             / \    / \
#            g   h  i  [ ]         <== Level 1
#           / \ / \ / \ /
#           a b c d e f j          <== Level 0
INCLUSION_NODE_VECTORS = [
    (1, 0, []),
    (2, 0, [(0, 1)]),
    (2, 1, [(0, 0)]),
    (3, 1, [(0, 0), (0, 2)]),
    (7, 0, [(0, 1), (1, 1), (0, 6), (1, 2)]),  # b h j i (l = hash(i, j))
    (7, 1, [(0, 0), (1, 1), (0, 6), (1, 2)]),
    (7, 2, [(0, 3), (1, 0), (0, 6), (1, 2)]),
    (7, 3, [(0, 2), (1, 0), (0, 6), (1, 2)]),
    (7, 4, [(0, 5), (0, 6), (2, 0)]),  # f j k
    (7, 5, [(0, 4), (0, 6), (2, 0)]),
    (7, 6, [(1, 2), (2, 0)]),  # i k
    (4, 2, [(0, 3), (1, 0)]),
    (5, 3, [(0, 2), (1, 0), (0, 4)]),
    (6, 3, [(0, 2), (1, 0), (1, 2)]),
    (6, 4, [(0, 5), (2, 0)]),
    (15, 10, [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)]),
    (31, 24, [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)]),
    (95, 81, [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
]

CONSISTENCY_NODE_VECTORS = [
    (1, 2, [(0, 1)]),
    (1, 4, [(0, 1), (1, 1)]),
    (1, 6, [(0, 1), (1, 1), (1, 2)]),
    (2, 3, [(0, 2)]),
    (2, 8, [(1, 1), (2, 1)]),
    (3, 7, [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)]),
    (4, 7, [(0, 6), (1, 2)]),
    (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)]),
    (6, 7, [(1, 2), (0, 6), (2, 0)]),
    (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)]),
    (1, 1, []),
    (2, 2, []),
    (3, 3, []),
    (4, 4, []),
    (5, 5, []),
    (7, 7, []),
    (8, 8, []),
    (2, 4, [(1, 1)]),
    (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)]),
    (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)]),
    (4, 6, [(1, 2)]),
    (1, 7, [(0, 1), (1, 1), (0, 6), (1, 2)]),
    (10, 15, [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)]),
    (24, 31, [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)]),
    (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
]


# ----------------------------------------------------------------------------- test helpers


def mth(hashes):
    """RFC 6962 section 2.1 MTH, transcribed literally (recursive)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1 << (n - 1).bit_length() - 1
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


def perfect_nodes(hashes):
    """{(level, index): hash} of every perfect subtree of the tree over ``hashes``."""
    nodes = {}
    row, level = list(hashes), 0
    while row:
        nodes.update(((level, i), h) for i, h in enumerate(row))
        row = [hashlib.sha256(b"\x01" + a + b).digest() for a, b in zip(row[0::2], row[1::2])]
        level += 1
    return nodes


class NodeStore:
    """A get_node over stored perfect nodes that records calls and refuses any node not
    entirely inside the tree of ``size`` (a proof for an old size must not peek ahead)."""

    def __init__(self, nodes, size):
        self.nodes, self.size, self.calls = nodes, size, []

    def __call__(self, level, index):
        assert (index + 1) << level <= self.size, f"asked for ({level}, {index}) outside size {self.size}"
        self.calls.append((level, index))
        return self.nodes[(level, index)]


def flip(h: bytes, byte: int = 0, mask: int = 8) -> bytes:
    b = bytearray(h)
    b[byte] ^= mask
    return bytes(b)


N_MAX = 2000
BIG_HASHES = [leaf_hash(b"leaf-%d" % i) for i in range(N_MAX)]
BIG_NODES = perfect_nodes(BIG_HASHES)
BIG_ROOTS = [EMPTY_ROOT]
_f = Frontier.empty()
for _h in BIG_HASHES:
    _f = _f.extend([_h])
    BIG_ROOTS.append(_f.root())


def inclusion_probes(index, size, proof, root, leaf):
    """Corrupted inclusion proofs (transparency-dev corruptInclusionProof, plus bit flips of
    the leaf and root and an emptied proof).  Every probe must be rejected."""
    probes = [
        ("index - 1", (leaf, index - 1, size, proof, root)),
        ("index + 1", (leaf, index + 1, size, proof, root)),
        ("index ^ 2", (leaf, index ^ 2, size, proof, root)),
        ("size * 2", (leaf, index, size * 2, proof, root)),
        ("size // 2", (leaf, index, size // 2, proof, root)),
        ("wrong leaf", (b"WrongLeaf", index, size, proof, root)),
        ("flipped leaf", (flip(leaf), index, size, proof, root)),
        ("flipped leaf last bit", (flip(leaf, 31, 1), index, size, proof, root)),
        ("empty root", (leaf, index, size, proof, EMPTY_ROOT)),
        ("random root", (leaf, index, size, proof, SOME_HASH)),
        ("flipped root", (leaf, index, size, proof, flip(root))),
        ("flipped root last bit", (leaf, index, size, proof, flip(root, 31, 1))),
        ("trailing garbage", (leaf, index, size, [*proof, b""], root)),
        ("trailing root", (leaf, index, size, [*proof, root], root)),
        ("preceding garbage", (leaf, index, size, [b"", *proof], root)),
        ("preceding root", (leaf, index, size, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        for byte, mask in ((0, 8), (31, 1)):
            bad = list(proof)
            bad[i] = flip(bad[i], byte, mask)
            probes.append((f"proof[{i}] byte {byte} flipped", (leaf, index, size, bad, root)))
    if proof:
        probes.append(("removed component", (leaf, index, size, proof[:-1], root)))
        probes.append(("empty proof", (leaf, index, size, [], root)))
    if len(proof) > 1:
        probes.append(("inserted component", (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root)))
    return probes


def consistency_probes(m, n, root1, root2, proof):
    """Corrupted consistency proofs (transparency-dev corruptConsistencyProof, plus root bit
    flips).  Only for non-trivial proofs; every probe must be rejected."""
    probes = [
        ("m - 1", (m - 1, n, root1, root2, proof)),
        ("m + 1", (m + 1, n, root1, root2, proof)),
        ("m ^ 2", (m ^ 2, n, root1, root2, proof)),
        ("n * 2", (m, n * 2, root1, root2, proof)),
        ("n // 2", (m, n // 2, root1, root2, proof)),
        ("wrong root1", (m, n, b"WrongRoot", root2, proof)),
        ("wrong root2", (m, n, root1, b"WrongRoot", proof)),
        ("flipped root1", (m, n, flip(root1), root2, proof)),
        ("flipped root2", (m, n, root1, flip(root2), proof)),
        ("swapped roots", (m, n, root2, root1, proof)),
        ("empty proof", (m, n, root1, root2, [])),
        ("trailing garbage", (m, n, root1, root2, [*proof, b""])),
        ("trailing root1", (m, n, root1, root2, [*proof, root1])),
        ("trailing root2", (m, n, root1, root2, [*proof, root2])),
        ("preceding garbage", (m, n, root1, root2, [b"", *proof])),
        ("preceding root1", (m, n, root1, root2, [root1, *proof])),
        ("preceding root2", (m, n, root1, root2, [root2, *proof])),
        ("preceding proof[0]", (m, n, root1, root2, [proof[0], *proof])),
        ("truncated proof", (m, n, root1, root2, proof[:-1])),
    ]
    for i in range(len(proof)):
        for byte, mask in ((0, 16), (31, 1)):
            bad = list(proof)
            bad[i] = flip(bad[i], byte, mask)
            probes.append((f"proof[{i}] byte {byte} flipped", (m, n, root1, root2, bad)))
    return probes


# ----------------------------------------------------------------------------- hashing


def test_rfc6962_hasher_vectors():
    assert EMPTY_ROOT == dh("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert leaf_hash(b"") == dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == dh("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    assert node_hash(b"N123", b"N456") == dh("aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")
    assert leaf_hash(bytearray(b"L123456")) == leaf_hash(memoryview(b"L123456"))


def test_hasher_domain_separation():
    h1, h2 = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert h1 != h2
    assert node_hash(h1, h2) != leaf_hash(h1 + h2)
    assert node_hash(h1, h2) != node_hash(h2, h1)
    assert EMPTY_ROOT != leaf_hash(b"")


@pytest.mark.parametrize("bad", ["text", 5, None, [1, 2]])
def test_hashers_reject_non_bytes(bad):
    with pytest.raises(TypeError):
        leaf_hash(bad)
    with pytest.raises(TypeError):
        node_hash(bad, b"x")


# ----------------------------------------------------------------------------- roots


@pytest.mark.parametrize("size", range(1, 9))
def test_reference_roots(size):
    hs = LEAF_HASHES[:size]
    assert root_from_leaf_hashes(hs) == ROOTS[size - 1]
    assert mth(hs) == ROOTS[size - 1]
    assert Frontier.empty().extend(hs).root() == ROOTS[size - 1]
    assert Frontier.empty().extend(leaf_hashes(pa.array(LEAVES[:size], pa.binary()))).root() == ROOTS[size - 1]


def test_empty_tree_root():
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert Frontier.empty().root() == EMPTY_ROOT
    assert Frontier.empty().extend(b"").root() == EMPTY_ROOT
    assert root_from(0, lambda *a: pytest.fail("no node needed")) == EMPTY_ROOT


def test_root_from_leaf_hashes_matches_rfc_definition():
    for size in range(0, 301):
        assert root_from_leaf_hashes(BIG_HASHES[:size]) == mth(BIG_HASHES[:size]) == BIG_ROOTS[size]
    for size in (512, 1023, 1024, 1025, 1999, 2000):
        assert root_from_leaf_hashes(BIG_HASHES[:size]) == mth(BIG_HASHES[:size]) == BIG_ROOTS[size]


def test_root_from_stored_nodes():
    for size in range(0, 300):
        store = NodeStore(BIG_NODES, size)
        assert root_from(size, store) == BIG_ROOTS[size]
        assert len(store.calls) == bin(size).count("1")


def test_root_from_rejects_bad_nodes():
    with pytest.raises(ValueError):
        root_from(3, lambda level, index: b"short")


# ----------------------------------------------------------------------------- inclusion


@pytest.mark.parametrize("index,size,proof", INCLUSION_VECTORS)
def test_inclusion_reference_vectors(index, size, proof):
    hs = LEAF_HASHES[:size]
    root = ROOTS[size - 1]
    assert inclusion_proof(index, hs) == proof
    store = NodeStore(perfect_nodes(hs), size)
    assert inclusion_proof_from(index, size, store) == proof
    assert verify_inclusion(hs[index], index, size, proof, root)
    # bytes-like inputs are fine too
    assert verify_inclusion(bytearray(hs[index]), index, size, tuple(map(memoryview, proof)), bytearray(root))


@pytest.mark.parametrize("index,size,proof", INCLUSION_VECTORS)
def test_inclusion_reference_vectors_corrupted(index, size, proof):
    leaf, root = LEAF_HASHES[index], ROOTS[size - 1]
    accepted = [d for d, args in inclusion_probes(index, size, proof, root, leaf) if verify_inclusion(*args)]
    assert accepted == []


def test_inclusion_single_entry():
    h = leaf_hash(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], h)
    assert not verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize("index,size", [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_degenerate(index, size):
    # transparency-dev TestVerifyInclusion probes: nothing verifies with an empty proof
    # against an empty/bogus root.
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


@pytest.mark.parametrize("size,index,ids", INCLUSION_NODE_VECTORS)
def test_inclusion_proof_from_asks_for_reference_nodes(size, index, ids):
    store = NodeStore(BIG_NODES, size)
    proof = inclusion_proof_from(index, size, store)
    assert store.calls == ids
    assert proof == inclusion_proof(index, BIG_HASHES[:size])


@pytest.mark.parametrize("size,index", [(0, 0), (0, 1), (1, 2), (0, 3), (7, 8), (7, 7), (3, -1)])
def test_inclusion_proof_bad_params(size, index):
    with pytest.raises(ValueError):
        inclusion_proof_from(index, size, NodeStore(BIG_NODES, size))
    with pytest.raises(ValueError):
        inclusion_proof(index, BIG_HASHES[:size])


def test_inclusion_exhaustive_small_trees():
    for size in range(1, 65):
        hs = BIG_HASHES[:size]
        for index in range(size):
            proof = inclusion_proof(index, hs)
            store = NodeStore(BIG_NODES, size)
            assert inclusion_proof_from(index, size, store) == proof
            assert len(store.calls) == len(set(store.calls)) <= 2 * size.bit_length()
            assert verify_inclusion(hs[index], index, size, proof, BIG_ROOTS[size])
            assert not verify_inclusion(hs[index], index, size, proof, BIG_ROOTS[size - 1] if size > 1 else SOME_HASH)
            for other in range(size):
                if other != index:
                    assert not verify_inclusion(hs[other], index, size, proof, BIG_ROOTS[size])


@PROPS
@given(size=st.integers(1, N_MAX), data=st.data())
def test_inclusion_property(size, data):
    index = data.draw(st.integers(0, size - 1), label="index")
    hs = BIG_HASHES[:size]
    root = BIG_ROOTS[size]
    proof = inclusion_proof(index, hs)
    store = NodeStore(BIG_NODES, size)
    assert inclusion_proof_from(index, size, store) == proof
    assert len(store.calls) == len(set(store.calls)) <= 2 * size.bit_length()
    assert verify_inclusion(hs[index], index, size, proof, root)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = list(proof)
        bad[i] = flip(bad[i], bit // 8, 1 << bit % 8)
        assert not verify_inclusion(hs[index], index, size, bad, root)
        assert not verify_inclusion(hs[index], index, size, proof[:-1], root)
    assert not verify_inclusion(hs[index], index, size, [*proof, SOME_HASH], root)
    assert not verify_inclusion(flip(hs[index]), index, size, proof, root)


# ----------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("m,n,proof", CONSISTENCY_VECTORS)
def test_consistency_reference_vectors(m, n, proof):
    hs = LEAF_HASHES[:n]
    root1, root2 = ROOTS[m - 1], ROOTS[n - 1]
    assert consistency_proof(m, hs) == proof
    store = NodeStore(perfect_nodes(hs), n)
    assert consistency_proof_from(m, n, store) == proof
    assert verify_consistency(m, n, root1, root2, proof)
    assert verify_consistency(m, n, bytearray(root1), memoryview(root2), tuple(proof))


@pytest.mark.parametrize("m,n,proof", [v for v in CONSISTENCY_VECTORS if v[2]])
def test_consistency_reference_vectors_corrupted(m, n, proof):
    root1, root2 = ROOTS[m - 1], ROOTS[n - 1]
    accepted = [d for d, args in consistency_probes(m, n, root1, root2, proof) if verify_consistency(*args)]
    assert accepted == []


ROOT_A, ROOT_B = SOME_HASH, flip(SOME_HASH)


@pytest.mark.parametrize(
    "m,n,root1,root2,proof,ok",
    [
        # equal sizes: roots must be equal and the proof empty
        (1, 1, ROOT_A, ROOT_B, [], False),
        (1, 1, ROOT_B, ROOT_B, [], True),
        (5, 5, ROOT_A, ROOT_A, [], True),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, ROOT_B, [], False),
        # m == 0: only with an empty proof, and root_m must be the empty tree's root
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [], True),
        (0, 0, ROOT_A, ROOT_A, [], False),
        (0, 0, EMPTY_ROOT, ROOT_B, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, EMPTY_ROOT, ROOT_B, [], True),
        (0, 1000, EMPTY_ROOT, ROOT_B, [], True),
        (0, 1, ROOT_A, ROOT_B, [], False),
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (0, 1, b"don't care 1", b"don't care 2", [], False),  # accepted by old transparency-dev
        # time travel to the past
        (1, 0, ROOT_A, ROOT_B, [], False),
        (2, 1, ROOT_A, ROOT_B, [], False),
        # empty proof between different sizes
        (1, 2, ROOT_A, ROOT_B, [], False),
    ],
)
def test_consistency_special_cases(m, n, root1, root2, proof, ok):
    assert verify_consistency(m, n, root1, root2, proof) is ok


@pytest.mark.parametrize("m,n,ids", CONSISTENCY_NODE_VECTORS)
def test_consistency_proof_from_asks_for_reference_nodes(m, n, ids):
    store = NodeStore(BIG_NODES, n)
    proof = consistency_proof_from(m, n, store)
    assert store.calls == ids
    assert proof == consistency_proof(m, BIG_HASHES[:n])


def test_consistency_proof_bad_params():
    for m, n in [(5, 0), (9, 8), (-1, 3)]:
        with pytest.raises(ValueError):
            consistency_proof_from(m, n, NodeStore(BIG_NODES, max(n, 0)))
        with pytest.raises(ValueError):
            consistency_proof(m, BIG_HASHES[:n])
    assert consistency_proof_from(0, 5, lambda *a: pytest.fail("no node needed")) == []
    assert consistency_proof_from(5, 5, lambda *a: pytest.fail("no node needed")) == []
    assert consistency_proof(0, BIG_HASHES[:5]) == consistency_proof(5, BIG_HASHES[:5]) == []


def test_consistency_exhaustive_small_trees():
    for n in range(1, 65):
        hs = BIG_HASHES[:n]
        for m in range(0, n + 1):
            proof = consistency_proof(m, hs)
            store = NodeStore(BIG_NODES, n)
            assert consistency_proof_from(m, n, store) == proof
            assert len(store.calls) == len(set(store.calls)) <= 2 * n.bit_length() + 1
            assert verify_consistency(m, n, BIG_ROOTS[m], BIG_ROOTS[n], proof)
            if 0 < m < n:
                assert not verify_consistency(m, n, BIG_ROOTS[m - 1], BIG_ROOTS[n], proof)
                assert not verify_consistency(m, n, BIG_ROOTS[m], BIG_ROOTS[n - 1], proof)
                accepted = [
                    d
                    for d, args in consistency_probes(m, n, BIG_ROOTS[m], BIG_ROOTS[n], proof)
                    if verify_consistency(*args)
                ]
                assert accepted == [], (m, n)


@PROPS
@given(n=st.integers(1, N_MAX), data=st.data())
def test_consistency_property(n, data):
    m = data.draw(st.integers(0, n), label="m")
    proof = consistency_proof(m, BIG_HASHES[:n])
    store = NodeStore(BIG_NODES, n)
    assert consistency_proof_from(m, n, store) == proof
    assert len(store.calls) == len(set(store.calls)) <= 2 * n.bit_length() + 1
    assert verify_consistency(m, n, BIG_ROOTS[m], BIG_ROOTS[n], proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = list(proof)
        bad[i] = flip(bad[i], bit // 8, 1 << bit % 8)
        assert not verify_consistency(m, n, BIG_ROOTS[m], BIG_ROOTS[n], bad)
        assert not verify_consistency(m, n, BIG_ROOTS[m], BIG_ROOTS[n], proof[:-1])
        assert not verify_consistency(m, n, BIG_ROOTS[m], BIG_ROOTS[n], [*proof, SOME_HASH])
        assert not verify_consistency(m, n, flip(BIG_ROOTS[m]), BIG_ROOTS[n], proof)
        assert not verify_consistency(m, n, BIG_ROOTS[m], flip(BIG_ROOTS[n]), proof)


# ----------------------------------------------------------------------------- huge trees


def _uniform_tree():
    """A tree whose leaves are all equal: node (level, i) is U[level] for every i, so proofs
    for trees of any size up to 2**64 - 1 can be built and checked without storing them."""
    u = [leaf_hash(b"same")]
    for _ in range(64):
        u.append(node_hash(u[-1], u[-1]))
    return u


U = _uniform_tree()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 2**64 - 1), data=st.data())
def test_huge_trees_use_logarithmic_node_reads(n, data):
    def store(size):
        calls = []

        def get(level, index):
            assert (index + 1) << level <= size
            calls.append((level, index))
            return U[level]

        return get, calls

    get, calls = store(n)
    root_n = root_from(n, get)
    assert len(calls) == bin(n).count("1")

    index = data.draw(st.integers(0, n - 1), label="index")
    get, calls = store(n)
    proof = inclusion_proof_from(index, n, get)
    assert len(calls) == len(set(calls)) <= 2 * n.bit_length()
    assert verify_inclusion(U[0], index, n, proof, root_n)
    assert not verify_inclusion(U[0], index, n, proof, flip(root_n))

    m = data.draw(st.integers(0, n), label="m")
    get, calls = store(m)
    root_m = root_from(m, get)
    get, calls = store(n)
    proof = consistency_proof_from(m, n, get)
    assert len(calls) == len(set(calls)) <= 2 * n.bit_length() + 1
    assert verify_consistency(m, n, root_m, root_n, proof)
    if proof:
        assert not verify_consistency(m, n, root_m, root_n, proof[:-1])


# ----------------------------------------------------------------------------- verifiers never raise


class Exploding:
    def __iter__(self):
        raise RuntimeError("boom")

    def __len__(self):
        raise RuntimeError("boom")


class BadIndex:
    def __index__(self):
        raise RuntimeError("boom")


GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, GOOD_PROOF = LEAF_HASHES[5], 5, 8, INCLUSION_VECTORS[2][2]
BAD_HASHES = [None, "", "00" * 32, b"", b"\x00" * 31, b"\x00" * 33, 0, 1.5, [0] * 32, object()]
BAD_SIZES = [None, -1, 2**64, 2**200, 1.0, "3", True, False, BadIndex(), b"\x03"]
BAD_PROOFS = [None, "abc", b"\x00" * 32, b"", 7, [None], [b"x"], [b"\x00" * 33], ["00" * 32], Exploding(),
              [*GOOD_PROOF, None]]


def test_verify_inclusion_never_raises_on_garbage():
    root = ROOTS[7]
    assert verify_inclusion(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, GOOD_PROOF, root)
    cases = []
    cases += [(b, GOOD_INDEX, GOOD_SIZE, GOOD_PROOF, root) for b in BAD_HASHES]
    cases += [(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, GOOD_PROOF, b) for b in BAD_HASHES]
    cases += [(GOOD_LEAF, b, GOOD_SIZE, GOOD_PROOF, root) for b in BAD_SIZES]
    cases += [(GOOD_LEAF, GOOD_INDEX, b, GOOD_PROOF, root) for b in BAD_SIZES]
    cases += [(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, b, root) for b in BAD_PROOFS]
    cases += [(GOOD_LEAF, GOOD_INDEX, GOOD_SIZE, [SOME_HASH] * 10_000, root)]
    cases += [(GOOD_LEAF, 2**64 - 2, 2**64 - 1, [SOME_HASH] * 64, root)]
    for args in cases:
        assert verify_inclusion(*args) is False, args


def test_verify_consistency_never_raises_on_garbage():
    m, n, proof = CONSISTENCY_VECTORS[2][:3]
    r1, r2 = ROOTS[m - 1], ROOTS[n - 1]
    assert verify_consistency(m, n, r1, r2, proof)
    cases = []
    cases += [(b, n, r1, r2, proof) for b in BAD_SIZES]
    cases += [(m, b, r1, r2, proof) for b in BAD_SIZES]
    cases += [(m, n, b, r2, proof) for b in BAD_HASHES]
    cases += [(m, n, r1, b, proof) for b in BAD_HASHES]
    cases += [(m, n, r1, r2, b) for b in BAD_PROOFS]
    cases += [(0, 0, r1, r1, b) for b in BAD_PROOFS]
    cases += [(m, n, r1, r2, [SOME_HASH] * 10_000)]
    cases += [(2**63 + 1, 2**64 - 1, r1, r2, [SOME_HASH] * 130)]
    for args in cases:
        assert verify_consistency(*args) is False, args


# ----------------------------------------------------------------------------- frontier


def test_frontier_matches_perfect_nodes():
    for size in range(0, 130):
        f = Frontier.empty().extend(BIG_HASHES[:size])
        assert f.size == size
        assert len(f.hashes) == bin(size).count("1")
        assert [(lv, i) for lv, i, _ in f.nodes()] == [
            (lv, (size >> lv) - 1) for lv in range(size.bit_length() - 1, -1, -1) if size >> lv & 1
        ]
        assert all(BIG_NODES[(lv, i)] == h for lv, i, h in f.nodes())
        assert f.root() == BIG_ROOTS[size]


def test_frontier_hex_round_trip():
    f = Frontier.empty().extend(BIG_HASHES[:1234])
    hexes = f.to_hex()
    assert hexes == [h.hex() for h in f.hashes] and all(len(x) == 64 for x in hexes)
    assert Frontier.from_hex(1234, hexes) == f
    assert Frontier.from_hex(0, []) == Frontier.empty()
    with pytest.raises(ValueError):
        Frontier.from_hex(1234, [x.upper() for x in hexes])
    with pytest.raises(ValueError):
        Frontier.from_hex(1234, hexes[:-1])
    with pytest.raises(ValueError):
        Frontier.from_hex(1235, hexes)
    with pytest.raises(ValueError):
        Frontier.from_hex(1234, [hexes[0][:-2], *hexes[1:]])
    with pytest.raises(ValueError):
        Frontier.from_hex(1234, [" " + hexes[0][1:], *hexes[1:]])


def test_frontier_validation_and_immutability():
    with pytest.raises(ValueError):
        Frontier(3, (SOME_HASH,))
    with pytest.raises(ValueError):
        Frontier(1, (b"short",))
    with pytest.raises(ValueError):
        Frontier(-1, ())
    with pytest.raises(TypeError):
        Frontier(True, (SOME_HASH,))
    f = Frontier(1, [bytearray(SOME_HASH)])  # normalised to a tuple of bytes
    assert f.hashes == (SOME_HASH,) and f == Frontier(1, (SOME_HASH,))
    with pytest.raises(FrozenInstanceError):
        f.size = 2
    with pytest.raises(ValueError):
        Frontier.empty().extend([SOME_HASH, b"short"])
    with pytest.raises(TypeError):
        Frontier.empty().extend([SOME_HASH, "00" * 32])
    assert Frontier.empty().extend([bytearray(SOME_HASH)]) == Frontier(1, (SOME_HASH,))
    assert f.extend([]) == f
    assert f.extend(iter([SOME_HASH])) == Frontier.empty().extend([SOME_HASH, SOME_HASH])


def test_frontier_reports_completed_nodes():
    seen = []
    f = Frontier.empty()
    for chunk in (BIG_HASHES[0:3], BIG_HASHES[3:4], BIG_HASHES[4:11]):
        f = f.extend(chunk, min_level=1, on_node=lambda lv, i, h: seen.append((lv, i, h)))
    # tree of 11: level 1 nodes 0..4, level 2 nodes 0..1, level 3 node 0
    assert [(lv, i) for lv, i, _ in seen] == [
        (1, 0), (1, 1), (2, 0), (1, 2), (1, 3), (1, 4), (2, 1), (3, 0),
    ]
    assert all(BIG_NODES[(lv, i)] == h for lv, i, h in seen)
    leaves = []
    Frontier.empty().extend(BIG_HASHES[:3], on_node=lambda *a: leaves.append(a))
    # min_level 0 reports the leaf hashes too; order is ascending (level, index)
    assert leaves == [(0, 0, BIG_HASHES[0]), (0, 1, BIG_HASHES[1]), (0, 2, BIG_HASHES[2]), (1, 0, BIG_NODES[(1, 0)])]


@PROPS
@given(
    n=st.integers(0, N_MAX),
    cuts=st.lists(st.integers(0, N_MAX), max_size=12),
    min_level=st.integers(0, 6),
)
def test_frontier_any_chunking_gives_the_root(n, cuts, min_level):
    bounds = sorted({0, n, *(c for c in cuts if c <= n)})
    seen = []
    f = Frontier.empty()
    for a, b in zip(bounds, bounds[1:]):
        f = f.extend(BIG_HASHES[a:b], min_level=min_level, on_node=lambda lv, i, h: seen.append((lv, i, h)))
        # round-trip through the stored (hex) form between appends
        f = Frontier.from_hex(f.size, f.to_hex())
    assert f.size == n
    assert f.root() == BIG_ROOTS[n] == root_from_leaf_hashes(BIG_HASHES[:n])
    assert f == Frontier.empty().extend(BIG_HASHES[:n])
    # every perfect node of the final tree at level >= min_level reported exactly once
    expected = {(lv, i) for lv, i in BIG_NODES if lv >= min_level and (i + 1) << lv <= n}
    assert len(seen) == len(expected) and {(lv, i) for lv, i, _ in seen} == expected
    assert all(BIG_NODES[(lv, i)] == h for lv, i, h in seen)
    # the reported nodes are enough to build proofs ("tiles" + leaf hashes)
    stored = {(lv, i): h for lv, i, h in seen}
    stored.update(((0, i), h) for i, h in enumerate(BIG_HASHES[:n]))
    stored.update(((lv, i), BIG_NODES[(lv, i)]) for lv in range(1, min_level) for i in range(n >> lv))
    if n:
        index = n // 3
        assert inclusion_proof_from(index, n, NodeStore(stored, n)) == inclusion_proof(index, BIG_HASHES[:n])


# ----------------------------------------------------------------------------- batches (arrow, packed hashes)


def test_leaf_hashes_strings_and_binary():
    texts = ["", "a", "é", "\x00", "ab\\x41", "\\x00", "'quote'", "日本語", '{"v":1,"seq":0}', "x" * 1000]
    want = b"".join(leaf_hash(t.encode("utf-8")) for t in texts)
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        assert leaf_hashes(pa.array(texts, typ)) == want
    blobs = [t.encode("utf-8") for t in texts] + [bytes(range(256))]
    want = b"".join(leaf_hash(b) for b in blobs)
    for typ in (pa.binary(), pa.large_binary(), pa.binary_view()):
        assert leaf_hashes(pa.array(blobs, typ)) == want
    fixed = [bytes([i]) * 7 for i in range(5)]
    assert leaf_hashes(pa.array(fixed, pa.binary(7))) == b"".join(leaf_hash(b) for b in fixed)
    chunked = pa.chunked_array([pa.array(texts[:3]), pa.array([], pa.string()), pa.array(texts[3:])])
    assert leaf_hashes(chunked) == b"".join(leaf_hash(t.encode()) for t in texts)
    assert leaf_hashes(pa.array(texts)[2:7]) == b"".join(leaf_hash(t.encode()) for t in texts[2:7])
    assert leaf_hashes(pa.array([], pa.string())) == b""


def test_leaf_hashes_rejects_bad_input():
    with pytest.raises(ValueError):
        leaf_hashes(pa.array(["a", None]))
    with pytest.raises(TypeError):
        leaf_hashes(pa.array([1, 2, 3]))


def test_batch_hasher_checks_its_buffers():
    from auditlake.ledger import _sha256

    data = b"abcdef"
    good = np.array([0, 3, 6], np.int64)
    assert _sha256.leaf_hashes(data, good) == leaf_hash(b"abc") + leaf_hash(b"def")
    assert _sha256.leaf_hashes(data, np.array([3], np.int64)) == b""  # no items
    for offsets in ([0, 3, 7], [0, 4, 3], [-1, 3, 6]):
        with pytest.raises(ValueError):
            _sha256.leaf_hashes(data, np.array(offsets, np.int64))
    with pytest.raises(ValueError):
        _sha256.leaf_hashes(data, b"\x00" * 12)  # not whole int64s
    with pytest.raises(ValueError):
        _sha256.node_hashes(b"\x00" * 63)
    long_view = np.array([20, 0, 0, 0], np.int32).tobytes()  # 20 bytes at offset 0 of buffer 0
    assert _sha256.leaf_hashes_views(long_view, (b"x" * 20,)) == leaf_hash(b"x" * 20)
    for view, buffers in ((long_view, (b"x" * 19,)), (long_view, ()), (long_view[:15], (b"x" * 20,)),
                          (np.array([-1, 0, 0, 0], np.int32).tobytes(), ())):
        with pytest.raises(ValueError):
            _sha256.leaf_hashes_views(view, buffers)
    with pytest.raises(ValueError):
        _sha256.hmacs(b"k", b"\x00" * 31, data, good)
    with pytest.raises(ValueError):
        _sha256.hmac_chain(b"k", b"\x00" * 31, data, good)


def test_node_hashes_are_rfc_nodes():
    from auditlake.ledger import _sha256

    pairs = BIG_HASHES[:200]
    assert _sha256.node_hashes(b"".join(pairs)) == b"".join(node_hash(a, b) for a, b in zip(pairs[0::2], pairs[1::2]))


@pytest.mark.parametrize("size", [2**16, 2**16 + 1, 2**17 - 1, 100_003])
def test_frontier_packed_equals_listed_on_large_trees(size):
    rng = random.Random(size)
    hashes = [rng.randbytes(32) for _ in range(size)]
    packed = b"".join(hashes)
    want = Frontier.empty().extend(hashes)
    assert Frontier.empty().extend(packed) == want
    cut = size // 3
    assert Frontier.empty().extend(packed[:32 * cut]).extend(memoryview(packed)[32 * cut:]) == want


def test_frontier_packed_rejects_ragged_bytes():
    with pytest.raises(ValueError):
        Frontier.empty().extend(b"\x00" * 33)


def test_arrow_pipeline_matches_python_pipeline():
    texts = [f'{{"seq":{i},"event_type":"login"}}' for i in range(70_001)]
    hashes = [leaf_hash(t.encode()) for t in texts]
    assert Frontier.empty().extend(leaf_hashes(pa.array(texts))).root() == root_from_leaf_hashes(hashes) == mth(hashes)


def test_batch_hasher_sixteen_items_at_a_time_is_sha256_and_hmac():
    """The AVX-512 path of the batch hasher (16 independent items at once, where the CPU has
    it) and the one-at-a-time path give hashlib's and hmac's digests: leaf hashes, links
    from given previous hashes and plain HMACs, for items of every length across SHA-256's
    block and padding boundaries (an HMAC's inner hash counts its 64-byte key block), long
    keys, whole groups of 16 and a remainder. The chained links (each from the one before)
    are one at a time either way and must agree too."""
    import hmac as hmac_

    from auditlake.ledger import _sha256

    items = [bytes([k % 251]) * k for k in range(300)] + [b"", b"z" * 70_000, bytes(range(256)) * 3]
    data = b"".join(items)
    offsets = np.cumsum([0] + [len(x) for x in items]).astype(np.int64)
    prevs = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(len(items)))
    had = _sha256.simd()
    try:
        for enabled in (True, False):
            assert _sha256.simd(enabled) == (enabled and had)
            assert _sha256.leaf_hashes(data, offsets) == b"".join(leaf_hash(x) for x in items)
            for key in (b"k" * 32, b"", b"long key " * 20):
                assert _sha256.hmacs(key, prevs, data, offsets) == b"".join(
                    hmac_.new(key, prevs[32 * i:32 * i + 32] + x, "sha256").digest() for i, x in enumerate(items))
                assert _sha256.hmacs(key, b"", data, offsets) == b"".join(
                    hmac_.new(key, x, "sha256").digest() for x in items)
                chained, prev = [], prevs[:32]
                for x in items:
                    prev = hmac_.new(key, prev + x, "sha256").digest()
                    chained.append(prev)
                assert _sha256.hmac_chain(key, prevs[:32], data, offsets) == b"".join(chained)
    finally:
        _sha256.simd(had)
