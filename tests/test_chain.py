"""The HMAC chain against Python's hmac: batches (arrow in, packed hashes out), key
rotation mid-chain, links checked one by one, and every input layout."""
import hashlib
import hmac
import random

import pyarrow as pa
import pytest

from auditlake.ledger import chain, packed

KEYS = {"k1": b"\x01" * 32, "k2": b"a key longer than the sixty-four byte HMAC block, hashed first" * 2}


def reference(prev: bytes, key_ids: list[str], leaves: list[bytes]) -> list[bytes]:
    out = []
    for kid, leaf in zip(key_ids, leaves):
        prev = hmac.new(KEYS[kid], prev + leaf, hashlib.sha256).digest()
        out.append(prev)
    return out


def leaves_of(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 900)) for _ in range(n)]


def test_extend_matches_hmac_across_a_key_rotation():
    leaves = leaves_of(300)
    key_ids = ["k1"] * 120 + ["k2"] * 100 + ["k1"] * 80
    want = reference(chain.GENESIS, key_ids, leaves)
    for typ in (pa.binary(), pa.large_binary(), pa.binary_view()):
        assert packed.split(chain.extend(KEYS, chain.GENESIS, key_ids, pa.array(leaves, typ))) == want
    chunked = pa.chunked_array([pa.array(leaves[:50]), pa.array(leaves[50:])])
    assert packed.split(chain.extend(KEYS, chain.GENESIS, key_ids, chunked)) == want
    middle = want[99]
    assert packed.split(chain.extend(KEYS, middle, key_ids[100:], pa.array(leaves)[100:])) == want[100:]
    assert chain.link(KEYS["k1"], chain.GENESIS, leaves[0]) == want[0]


def test_extend_of_strings_hashes_their_utf8():
    texts = ['{"seq":0}', "é", "", "日本"]
    want = reference(chain.GENESIS, ["k1"] * 4, [t.encode() for t in texts])
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        assert packed.split(chain.extend(KEYS, chain.GENESIS, ["k1"] * 4, pa.array(texts, typ))) == want


def test_extend_rejects_null_leaves_and_unknown_keys():
    with pytest.raises(ValueError):
        chain.extend(KEYS, chain.GENESIS, ["k1", "k1"], pa.array([b"a", None]))
    with pytest.raises(KeyError):
        chain.extend(KEYS, chain.GENESIS, ["nope"], pa.array([b"a"]))
    assert chain.extend(KEYS, chain.GENESIS, [], pa.array([], pa.binary())) == b""


def test_links_check_each_row_against_its_given_previous_hash():
    leaves = leaves_of(200, seed=2)
    rng = random.Random(3)
    prevs = [rng.randbytes(32) for _ in leaves]
    want = b"".join(hmac.new(KEYS["k2"], p + leaf, hashlib.sha256).digest() for p, leaf in zip(prevs, leaves))
    assert chain.links(KEYS["k2"], b"".join(prevs), pa.array(leaves, pa.large_binary())) == want
    sliced = pa.array([b"x", *leaves], pa.binary()).slice(1)
    assert chain.links(KEYS["k2"], b"".join(prevs), sliced) == want
    with pytest.raises(ValueError):
        chain.links(KEYS["k2"], b"".join(prevs[:-1]), pa.array(leaves))


def test_hex_and_fixed_arrays_of_packed_hashes():
    hashes = reference(chain.GENESIS, ["k1"] * 3, [b"a", b"b", b"c"])
    joined = b"".join(hashes)
    assert packed.hex_array(joined).to_pylist() == [h.hex() for h in hashes]
    assert packed.fixed_array(joined).to_pylist() == hashes
    assert packed.hex_array(b"").to_pylist() == []


def test_blind_indexes_match_hmac_of_each_phone():
    from auditlake.ledger.seal import BIDX_PREFIX, blind_indexes

    phones = ["+15551234567", None, "+4930123456", "+3361234567" * 10, None, "+15551234567"]
    for key in KEYS.values():
        want = [None if p is None else BIDX_PREFIX + hmac.new(key, p.encode(), hashlib.sha256).hexdigest() for p in phones]
        assert blind_indexes(key, phones) == want
    assert blind_indexes(KEYS["k1"], [None, None]) == [None, None]
    assert blind_indexes(KEYS["k1"], []) == []


def test_nonces_are_fresh_and_not_shared_with_a_forked_child():
    import os

    from auditlake.ledger.seal import Nonces

    nonces = Nonces()
    taken = [nonces.take() for _ in range(3000)]  # across blocks
    assert len(set(taken)) == 3000 and all(len(n) == 12 for n in taken)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child takes the next nonce from what it inherited
        os.write(write, nonces.take())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 12)
    assert child != nonces.take() and child not in taken
