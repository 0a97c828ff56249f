"""Inclusion and consistency proofs (INTERFACES.md), their offline check, and tiles."""
import copy
import json
import os

import pytest

from auditlake import proofs
from auditlake.cli import main
from auditlake.errors import AuditlakeError
from auditlake.head import read_checkpoints
from auditlake.ingest import ingest
from auditlake.ledger import merkle
from auditlake.verify import verify
from events import event, write_jsonl


def _ingest(lake, tmp_path, lo, hi, name):
    write_jsonl(tmp_path / name / "a.jsonl", [event(n=i) for i in range(lo, hi)])
    return ingest(lake, [str(tmp_path / name)])


def _build3(lake, tmp_path):
    _ingest(lake, tmp_path, 0, 300, "b1")
    _ingest(lake, tmp_path, 300, 520, "b2")
    _ingest(lake, tmp_path, 520, 700, "b3")
    return lake


@pytest.fixture(scope="module")
def _shared3(tmp_path_factory):
    """A lake of 700 events in three batches (checkpoints at 300, 520 and 700; tiles at
    level 8 and 9), built once with its own keystore home; tests only read it."""
    from auditlake.lake.store import Lake

    base = tmp_path_factory.mktemp("proofs3")
    mp = pytest.MonkeyPatch()
    mp.setenv("AUDITLAKE_HOME", str(base / "home"))
    try:
        lake = _build3(Lake.open(str(base / "lake")), base)
    finally:
        mp.undo()
    return lake, base / "home"


@pytest.fixture
def lake3(_shared3, monkeypatch):
    lake, home = _shared3
    monkeypatch.setenv("AUDITLAKE_HOME", str(home))
    return lake


def _ids(lake):
    t = lake.delta("ledger").to_pyarrow_dataset().to_table(columns=["seq", "event_id", "leaf"]).sort_by("seq")
    return t.column("event_id").to_pylist(), [s.encode() for s in t.column("leaf").to_pylist()]


def _tiles(lake):
    dt = lake.delta("tiles")
    t = dt.to_pyarrow_dataset().to_table()
    return {(r["level"], r["idx"]): r["hash"] for r in t.to_pylist()}


def test_proofs_match_the_reference_for_every_leaf_and_verify(lake3):
    ids, leaves = _ids(lake3)
    hashes = [merkle.leaf_hash(x) for x in leaves]
    n = len(hashes)
    assert n == 700
    root = merkle.root_from_leaf_hashes(hashes)
    for i in list(range(0, n, 37)) + [255, 256, 511, 512, 699]:
        doc = proofs.inclusion_proof(lake3, ids[i])
        assert doc["leaf_index"] == i and doc["tree_size"] == n and doc["root"] == root.hex()
        assert doc["proof"] == [h.hex() for h in merkle.inclusion_proof(i, hashes)]
        assert doc["leaf"].encode() == leaves[i]
        ok, why = proofs.verify_proof_doc(doc)
        assert ok, why
    # The tiles ingest stored are the perfect nodes of level >= 8.
    tiles = _tiles(lake3)
    assert set(tiles) == {(8, 0), (8, 1), (9, 0)}
    assert tiles[(9, 0)] == merkle.root_from_leaf_hashes(hashes[:512]).hex()
    assert verify(lake3).ok


def test_a_proof_reads_one_block_of_leaves_not_the_log(lake3, monkeypatch):
    ids, _ = _ids(lake3)
    reads = []
    real = proofs.read_seq_ranges

    def spy(lake, ranges, columns, dt=None):
        t = real(lake, ranges, columns, dt)
        reads.append(t.num_rows)
        return t

    monkeypatch.setattr(proofs, "read_seq_ranges", spy)
    for i in (3, 300, 600):
        reads.clear()
        ok, _ = proofs.verify_proof_doc(proofs.inclusion_proof(lake3, ids[i]))
        assert ok
        assert sum(reads) <= proofs.TILE_LEAVES, reads


def test_missing_tiles_are_recomputed_from_leaves_and_stored(lake, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(proofs, "write_tiles", lambda *a, **k: True)  # an ingest that stored no tiles
        _ingest(lake, tmp_path, 0, 600, "b1")
    assert lake.delta("tiles") is None
    ids, leaves = _ids(lake)
    doc = proofs.inclusion_proof(lake, ids[100])  # needs (8, 1): recomputed from its 256 leaves
    assert proofs.verify_proof_doc(doc)[0]
    assert _tiles(lake)[(8, 1)] == merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in leaves[256:512]]).hex()
    assert proofs.backfill_tiles(lake) == 2  # every perfect node of level >= 8: (8, 0) and (9, 0)
    assert set(_tiles(lake)) == {(8, 0), (8, 1), (9, 0)}
    assert proofs.backfill_tiles(lake) == 0
    assert verify(lake).ok  # the stored tiles are under retention like everything else


def test_a_wrong_tile_does_not_yield_a_wrong_proof(lake, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        m.setattr(proofs, "write_tiles", lambda *a, **k: True)
        _ingest(lake, tmp_path, 0, 600, "b1")
    ids, _ = _ids(lake)
    proofs.write_tiles(lake, [(8, 1, b"\x01" * 32)], lock=True)  # a corrupted cache entry
    doc = proofs.inclusion_proof(lake, ids[100])
    assert proofs.verify_proof_doc(doc)[0]
    assert "tiles disagree" in capsys.readouterr().err


def test_a_forged_tiles_commit_is_reported_never_sealed_and_repaired(lake, tmp_path):
    """The tiles' commits are signed like the other tables no chain seals: a blind append of
    made-up nodes is an unsigned_commit (partition values included in the signed rows), the
    next ingest stops before sealing it for good, and repair removes it."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from auditlake.errors import AuditlakeError
    from auditlake.lake.admin import repair
    from auditlake.lake.tables import TILES

    _ingest(lake, tmp_path, 0, 300, "b1")
    version = lake.delta("tiles").version()
    assert verify(lake, update_trust=False).ok  # the lake's own tiles commits carry its signature
    write_deltalake(lake.table_uri("tiles"), pa.Table.from_pylist([{"level": 9, "idx": 0, "hash": "ab" * 32}], schema=TILES),
                    mode="append")
    forged = f"_delta_log/{version + 1:020d}.json"
    report = verify(lake, update_trust=False)
    assert ("unsigned_commit", "tiles", forged) in {(f.kind, f.table, f.file) for f in report.findings}, report.findings
    assert {f.kind for f in report.findings} == {"unsigned_commit", "RET-WORM"}  # (its files are not locked)
    write_jsonl(tmp_path / "b2" / "a.jsonl", [event(n=i) for i in range(300, 310)])
    with pytest.raises(AuditlakeError, match="is no commit the lake makes"):
        ingest(lake, [str(tmp_path / "b2")])
    assert f"tables/tiles/{forged}" in repair(lake)["repaired"]
    assert ingest(lake, [str(tmp_path / "b2")]).accepted == 10
    assert verify(lake, update_trust=False).ok


def test_a_lake_whose_tiles_were_stored_before_they_were_signed_still_verifies(lake, tmp_path, monkeypatch):
    """Tiles commits of a lake made before they were signed (commit 71bf81c) are no forgery:
    unsigned ones before its first signed one pass; one after it is unsigned_commit."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from auditlake.lake import tables
    from auditlake.lake.tables import TILES

    with monkeypatch.context() as m:  # an older auditlake's writer
        m.setattr(tables, "SIGNED_COMMITS", tuple(t for t in tables.SIGNED_COMMITS if t != "tiles"))
        _ingest(lake, tmp_path, 0, 300, "b1")
    assert "auditlake_signature" not in lake.delta("tiles").history(1)[0]
    _ingest(lake, tmp_path, 300, 600, "b2")  # this one's tiles commit is signed
    assert verify(lake, update_trust=False).ok
    write_deltalake(lake.table_uri("tiles"), pa.Table.from_pylist([{"level": 9, "idx": 0, "hash": "ab" * 32}], schema=TILES),
                    mode="append")
    assert "unsigned_commit" in {f.kind for f in verify(lake, update_trust=False).findings}


def test_prove_and_verify_proof_cli(lake3, tmp_path, capsys, monkeypatch):
    ids, _ = _ids(lake3)
    lake_arg = ["--lake", lake3.uri]
    out = tmp_path / "p.json"
    assert main([*lake_arg, "prove", ids[123], "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    for key in ("event_id", "leaf", "leaf_b64", "leaf_index", "tree_size", "root", "proof", "checkpoint", "public_key"):
        assert key in doc
    for key in ("signature", "key_id", "checkpoint_hash", "tree_size", "root", "chain_head", "log_id"):
        assert key in doc["checkpoint"]
    capsys.readouterr()
    assert main([*lake_arg, "verify-proof", str(out)]) == 0
    assert "valid" in capsys.readouterr().out
    # No key to pin (no --public-key, no lake here): refused, as the proof's own key proves nothing.
    assert main(["verify-proof", str(out)]) == 2
    assert "--public-key" in capsys.readouterr().err
    # Pinned with the lake's exported public keys; a different key is refused.
    keyfile = tmp_path / "pub.json"
    assert main([*lake_arg, "keys", "export-public", "--out", str(keyfile)]) == 0
    assert main(["verify-proof", str(out), "--public-key", str(keyfile)]) == 0
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from auditlake.keys import public_key_b64

    other = tmp_path / "other.txt"
    other.write_text(public_key_b64(Ed25519PrivateKey.generate().public_key()))
    capsys.readouterr()
    assert main(["verify-proof", str(out), "--public-key", str(other)]) == 1
    assert "pinned" in capsys.readouterr().out
    # A proof re-signed with someone else's key, which it carries: its own key vouches for it;
    # the keys of the lake named with --lake do not.
    from dataclasses import replace

    from auditlake.keys import signing_key_id
    from auditlake.ledger.checkpoint import Checkpoint

    forger = Ed25519PrivateKey.generate()
    cp = replace(Checkpoint.from_dict(doc["checkpoint"]), key_id=signing_key_id(forger.public_key())).signed(forger)
    forged = {k: v for k, v in doc.items() if k != "public_keys"} | {
        "checkpoint": cp.to_dict(), "public_key": public_key_b64(forger.public_key())}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    assert main(["verify-proof", str(tmp_path / "forged.json"), "--public-key", str(keyfile)]) == 1
    assert main([*lake_arg, "verify-proof", str(tmp_path / "forged.json")]) == 1
    assert main([*lake_arg, "verify-proof", str(out)]) == 0
    # A proof is no key file: pinned, the forged one would vouch for itself.
    capsys.readouterr()
    assert main(["verify-proof", str(tmp_path / "forged.json"), "--public-key", str(tmp_path / "forged.json")]) == 2
    assert "is a signed document (a proof or an export manifest), not a key file" in capsys.readouterr().err
    # ./lake is every command's default lake: its keys are pinned as --lake's are.
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "lake").symlink_to(lake3.uri)
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["verify-proof", str(tmp_path / "forged.json")]) == 1
    assert main(["verify-proof", str(out)]) == 0
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUDITLAKE_LAKE", lake3.uri)
    # A key given twice: the last value is the signed one, another reader takes the first.
    (tmp_path / "twice.json").write_text(out.read_text().replace("{", '{"leaf_index": 7, ', 1))
    assert main(["verify-proof", str(tmp_path / "twice.json")]) == 1
    capsys.readouterr()
    # --json and stdout output
    assert main([*lake_arg, "--json", "prove", ids[5]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["leaf_index"] == 5
    # A proof that is not JSON is not valid (exit 1); a file that is not there or an unknown
    # event is a usage error (exit 2).
    bad = tmp_path / "bad.json"
    for text in ("{not json", "[" * 100_000 + "]" * 100_000, out.read_text().replace('"leaf_b64"', '"leaf": "\\ud800", "x"', 1),
                 json.dumps({**doc, "proof": {"a": 1}}), json.dumps({**doc, "checkpoint": ["x"]}),
                 json.dumps({**doc, "leaf_index": [1]}), json.dumps({**doc, "public_key": [1]})):
        bad.write_text(text)
        assert main(["verify-proof", str(bad)]) == 1, text[:80]
    assert main(["verify-proof", str(tmp_path / "missing.json")]) == 2
    home = tmp_path / "empty-home"  # a lake whose keystore is not here: said so, no keys made up
    monkeypatch.setenv("AUDITLAKE_HOME", str(home))
    assert main(["verify-proof", str(out)]) == 2 and not (home / "keystores").exists()
    assert main([*lake_arg, "prove", "00000000-0000-4000-8000-00000000ffff"]) == 2


def _mutations(doc):
    """(label, corrupted copy) for every field of an inclusion proof."""
    out = []

    def put(label, fn):
        d = copy.deepcopy(doc)
        fn(d)
        out.append((label, d))

    flip = lambda h: ("0" if h[0] != "0" else "1") + h[1:]  # noqa: E731
    put("type", lambda d: d.update(type="consistency"))
    put("type-missing", lambda d: d.pop("type"))
    put("version", lambda d: d.update(version=2))
    put("log_id", lambda d: d.update(log_id=d["log_id"] + "x"))
    put("event_id", lambda d: d.update(event_id="00000000-0000-4000-8000-000000000000"))
    put("leaf", lambda d: d.update(leaf=d["leaf"].replace('"tenant-a"', '"tenant-b"')))
    put("leaf+b64", lambda d: d.update(leaf=d["leaf"].replace('"tenant-a"', '"tenant-b"'),
                                       leaf_b64=__import__("base64").b64encode(d["leaf"].replace('"tenant-a"', '"tenant-b"').encode()).decode()))
    put("leaf_b64", lambda d: d.update(leaf_b64=d["leaf_b64"][:-4] + "AAA="))
    put("leaf_index", lambda d: d.update(leaf_index=d["leaf_index"] + 1))
    put("leaf_index-str", lambda d: d.update(leaf_index=str(d["leaf_index"])))
    put("tree_size", lambda d: d.update(tree_size=d["tree_size"] + 1))
    put("root", lambda d: d.update(root=flip(d["root"])))
    for i in range(len(doc["proof"])):
        put(f"proof[{i}]", lambda d, i=i: d["proof"].__setitem__(i, flip(d["proof"][i])))
    put("proof-extra", lambda d: d["proof"].append("00" * 32))
    put("proof-short", lambda d: d["proof"].pop())
    put("proof-reversed", lambda d: d["proof"].reverse())
    put("proof-upper", lambda d: d["proof"].__setitem__(0, d["proof"][0].upper()))
    for k in doc["checkpoint"]:
        v = doc["checkpoint"][k]
        if isinstance(v, int):
            put(f"checkpoint.{k}", lambda d, k=k: d["checkpoint"].__setitem__(k, d["checkpoint"][k] + 1))
        elif k == "signature":
            put("checkpoint.signature", lambda d: d["checkpoint"].__setitem__(
                "signature", __import__("base64").b64encode(bytes(64)).decode()))
        else:
            put(f"checkpoint.{k}", lambda d, k=k: d["checkpoint"].__setitem__(k, flip(d["checkpoint"][k])))
        put(f"checkpoint.{k}-missing", lambda d, k=k: d["checkpoint"].pop(k))
    put("checkpoint-resigned-other-root", lambda d: None)  # placeholder, replaced below
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from auditlake.keys import public_key_b64

    put("public_key", lambda d: d.update(public_key=public_key_b64(Ed25519PrivateKey.generate().public_key())))
    put("public_key-garbage", lambda d: d.update(public_key="bm90IGEga2V5"))
    put("public_key-missing", lambda d: d.pop("public_key"))
    return [(label, d) for label, d in out if label != "checkpoint-resigned-other-root"]


def test_every_corrupted_field_of_a_proof_is_rejected(lake3, tmp_path):
    ids, _ = _ids(lake3)
    doc = proofs.inclusion_proof(lake3, ids[400])
    assert proofs.verify_proof_doc(doc)[0]
    assert len(doc["proof"]) >= 8
    for label, bad in _mutations(doc):
        ok, why = proofs.verify_proof_doc(bad)
        assert not ok, label
        assert why, label
    # A field in the checkpoint that no signature covers (a reader could take it for signed).
    extra = copy.deepcopy(doc)
    extra["checkpoint"]["approved_by"] = "the regulator"
    assert proofs.verify_proof_doc(extra) == (False, "checkpoint has fields no signature covers: approved_by")
    # A checkpoint re-signed by an attacker's key over another root fails when the key is pinned.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from auditlake.keys import public_key_b64, signing_key_id
    from auditlake.ledger.checkpoint import Checkpoint

    evil = Ed25519PrivateKey.generate()
    forged = copy.deepcopy(doc)
    cp = Checkpoint.from_dict(doc["checkpoint"])
    cp = Checkpoint(**{**cp.__dict__, "key_id": signing_key_id(evil.public_key()), "signature": ""}).signed(evil)
    forged["checkpoint"] = cp.to_dict()
    forged["public_key"] = public_key_b64(evil.public_key())
    assert proofs.verify_proof_doc(forged)[0]  # self-consistent...
    ok, why = proofs.verify_proof_doc(forged, doc["public_key"])  # ...but not by the pinned key
    assert not ok and "pinned" in why
    # Through the CLI: exit 1 with the reason.
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(_mutations(doc)[0][1]))
    assert main(["--lake", lake3.uri, "verify-proof", str(f)]) == 1


def test_consistency_proofs_between_checkpoints(lake3, tmp_path, capsys):
    sizes = [r["tree_size"] for r in read_checkpoints(lake3)]
    assert sizes == [300, 520, 700]
    _, leaves = _ids(lake3)
    hashes = [merkle.leaf_hash(x) for x in leaves]
    for m in sizes:
        for n in sizes:
            if m > n:
                continue
            doc = proofs.consistency_proof(lake3, m, n)
            assert doc["proof"] == [h.hex() for h in merkle.consistency_proof(m, hashes[:n])]
            assert proofs.verify_proof_doc(doc)[0]
    doc = proofs.consistency_proof(lake3, 300, 700)
    for label, fn in [
        ("proof", lambda d: d["proof"].__setitem__(0, "ab" * 32)),
        ("proof-short", lambda d: d["proof"].pop()),
        ("old.root", lambda d: d["old"].__setitem__("root", "cd" * 32)),
        ("new.tree_size", lambda d: d["new"].__setitem__("tree_size", 701)),
        ("old.signature", lambda d: d["old"].__setitem__("signature", d["new"]["signature"])),
        ("swap", lambda d: d.update(old=d["new"], new=d["old"])),
        ("log_id", lambda d: d.update(log_id="log-other")),
    ]:
        bad = copy.deepcopy(doc)
        fn(bad)
        assert not proofs.verify_proof_doc(bad)[0], label
    out = tmp_path / "c.json"
    assert main(["--lake", lake3.uri, "prove", "--consistency", "300", "700", "--out", str(out)]) == 0
    assert main(["--lake", lake3.uri, "verify-proof", str(out)]) == 0
    assert main(["--lake", lake3.uri, "prove", "--consistency", "700", "300"]) == 2
    assert main(["--lake", lake3.uri, "prove", "--consistency", "301", "700"]) == 2
    assert "no signed checkpoint of tree size 301" in capsys.readouterr().err


def test_public_key_file_formats(lake3, tmp_path):
    from cryptography.hazmat.primitives import serialization

    from auditlake.keys import load_public_key
    from auditlake.lake.meta import open_lake_keys

    ids, _ = _ids(lake3)
    doc = proofs.inclusion_proof(lake3, ids[1])
    keys = open_lake_keys(lake3)
    b64 = keys.public_keys()[keys.signing_key_id]
    (tmp_path / "raw.txt").write_text(b64 + "\n")
    (tmp_path / "one.json").write_text(json.dumps({"public_key": b64}))
    pem = load_public_key(b64).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pem").write_bytes(pem)
    for name in ("raw.txt", "one.json", "k.pem"):
        pinned = proofs.load_public_key_file(str(tmp_path / name))
        assert proofs.verify_proof_doc(doc, pinned)[0], name
    (tmp_path / "junk.txt").write_text("hello")
    with pytest.raises(Exception):
        proofs.load_public_key_file(str(tmp_path / "junk.txt"))
    # Pinned to no key at all: refused, never read as "not pinned" (then the proof's own key,
    # which anyone can replace, would be trusted).
    (tmp_path / "empty.json").write_text(json.dumps({"log_id": keys.log_id, "public_keys": {}}))
    with pytest.raises(AuditlakeError, match="public_keys are empty"):
        proofs.load_public_key_file(str(tmp_path / "empty.json"))
    assert proofs.verify_proof_doc(doc, {}) == (False, "the pinned key set holds no public key")


def test_offline_inputs_are_bounded_and_a_pipe_is_read_like_a_file(lake3, tmp_path, capsys, monkeypatch):
    """/dev/zero given as the proof or the key file: one line, exit 2, at once (not an
    exhausted memory); a folder is refused; a pipe is read like a file, and one nobody
    writes to is empty, not waited on."""
    import threading

    from auditlake import inputs

    ids, _ = _ids(lake3)
    proof = tmp_path / "p.json"
    assert main(["--lake", lake3.uri, "prove", ids[1], "--out", str(proof)]) == 0
    keyfile = tmp_path / "pub.json"
    assert main(["--lake", lake3.uri, "keys", "export-public", "--out", str(keyfile)]) == 0
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [(["verify-proof", "/dev/zero", "--public-key", str(keyfile)], "the proof /dev/zero is larger than 64 MiB"),
             (["verify-proof", str(proof), "--public-key", "/dev/zero"], "is larger than 1 MiB"),
             (["verify-proof", str(tmp_path), "--public-key", str(keyfile)], "is not a file"),
             (["verify-proof", str(proof), "--public-key", str(fifo)], "is not a public key file")]
    for argv, said in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert said in err and "\n" not in err, err

    # A pipe as `<(cat p.json)` gives it: read to its end like a file.
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, proof.read_bytes()), os.close(write_end)))
    writer.start()
    try:
        assert main(["verify-proof", f"/dev/fd/{read_end}", "--public-key", str(keyfile)]) == 0
    finally:
        writer.join()
        os.close(read_end)
    monkeypatch.setattr(inputs, "MAX_DOCUMENT_BYTES", 100)
    capsys.readouterr()
    assert main(["verify-proof", str(proof), "--public-key", str(keyfile)]) == 2
    assert "larger than" in capsys.readouterr().err


def test_proof_after_key_rotation_uses_the_checkpoints_key(lake, tmp_path):
    from auditlake.lake.meta import open_lake_keys

    _ingest(lake, tmp_path, 0, 300, "b1")
    ids, _ = _ids(lake)
    old_doc = proofs.inclusion_proof(lake, ids[10])
    open_lake_keys(lake).rotate()
    _ingest(lake, tmp_path, 300, 310, "b2")
    new_doc = proofs.inclusion_proof(lake, ids[10])
    assert new_doc["checkpoint"]["key_id"] != old_doc["checkpoint"]["key_id"]
    assert proofs.verify_proof_doc(new_doc)[0] and proofs.verify_proof_doc(old_doc)[0]
    # A mixed-key consistency proof carries both keys.
    doc = proofs.consistency_proof(lake, 300, 310)
    assert proofs.verify_proof_doc(doc)[0]
    assert len(doc["public_keys"]) == 2


def test_a_retired_key_extends_nothing_offline(lake, tmp_path, capsys):
    """A signing key that a newer one replaced (leaked, or kept by whoever had the old
    keystore) signs a checkpoint past the rotation: verify-proof and verify-export refuse it,
    pinned by the lake's keystore or by a key file exported after the rotation, while what
    it signed before the rotation still verifies. A key file of another log, or a proof
    declaring a key that is not pinned, is refused too."""
    import base64
    from dataclasses import replace

    from auditlake.export import build_export, verify_export
    from auditlake.keys import public_key_b64
    from auditlake.lake.meta import open_lake_keys
    from auditlake.ledger.canonical import canonical_json
    from auditlake.ledger.checkpoint import Checkpoint

    _ingest(lake, tmp_path, 0, 300, "b1")
    ids, _ = _ids(lake)
    keys = open_lake_keys(lake)
    old_kid, old_key = keys.signing_key_id, keys.signing_key()
    before = proofs.inclusion_proof(lake, ids[10])
    keys.rotate()
    _ingest(lake, tmp_path, 300, 310, "b2")
    keyfile = tmp_path / "pub.json"
    assert main(["--lake", lake.uri, "keys", "export-public", "--out", str(keyfile)]) == 0
    assert json.loads(keyfile.read_text())["retired_at"] == {old_kid: 310}  # the new key's first checkpoint

    def resign(cp: dict) -> dict:
        return replace(Checkpoint.from_dict(cp), key_id=old_kid).signed(old_key).to_dict()

    forged = proofs.inclusion_proof(lake, ids[10])
    forged["checkpoint"] = resign(forged["checkpoint"])
    forged["public_key"] = public_key_b64(old_key.public_key())
    by_lake = proofs.pinned_public_keys(type("A", (), {"public_key": None, "lake": lake.uri})())
    by_file = proofs.load_public_key_file(str(keyfile))
    for pinned in (by_lake, by_file):
        ok, why = proofs.verify_proof_doc(forged, pinned)
        assert not ok and f"signed with key {old_kid}, which a newer key replaced at tree size 310" in why
        assert proofs.verify_proof_doc(before, pinned)[0]
    # Without what the key file says of retirement (a file exported before the rotation) the
    # forgery cannot be told offline: why the file is exported again after each rotation.
    assert proofs.verify_proof_doc(forged, dict(by_file))[0]

    bundle = tmp_path / "bundle"
    build_export(lake, str(bundle), ["jsonl"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source_checkpoint"] = resign(manifest["source_checkpoint"])
    manifest |= {"key_id": old_kid, "public_key": forged["public_key"], "public_keys": {old_kid: forged["public_key"]}}
    body = {k: v for k, v in manifest.items() if k != "signature"}
    manifest["signature"] = base64.b64encode(old_key.sign(canonical_json(body))).decode()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    res = verify_export(str(bundle), by_file)
    assert not res["ok"] and any("a retired key extends nothing" in p for p in res["problems"])
    assert verify_export(str(bundle), dict(by_file))["ok"]

    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads(keyfile.read_text()) | {"log_id": "log-" + "f" * 32}))
    ok, why = proofs.verify_proof_doc(before, proofs.load_public_key_file(str(other)))
    assert not ok and "the pinned keys are of log log-ffff" in why
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from auditlake.keys import signing_key_id

    stranger = Ed25519PrivateKey.generate().public_key()
    swapped = copy.deepcopy(before)
    swapped["public_key"] = public_key_b64(stranger)
    assert proofs.verify_proof_doc(swapped, by_file) == (
        False, f"the proof declares a public key for {signing_key_id(stranger)} that is not the pinned one")


def test_event_index_finds_events_compacts_and_survives_a_forged_entry(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(proofs, "INDEX_MIN_ROWS", 50)
    monkeypatch.setattr(proofs, "INDEX_MAX_SEGMENTS", 1)
    for k in range(3):
        _ingest(lake, tmp_path, k * 60, (k + 1) * 60, f"b{k}")
        ids, _ = _ids(lake)
        assert proofs.locate_event(lake, ids[-1]) == len(ids) - 1  # scans the tail, then indexes it
    segs = proofs._index_segments(lake)
    chosen, covered = proofs._cover(segs)
    assert covered == 180 and len(chosen) == 1  # compacted into one segment from 0
    assert chosen[0][:2] == (0, 180)
    for i in (0, 59, 60, 131, 179):
        assert proofs.locate_event(lake, ids[i]) == i
    assert proofs.locate_event(lake, "00000000-0000-4000-8000-0000000fffff") is None
    # A forged index entry (event 5 -> seq 7) cannot produce a wrong proof.
    import pyarrow as pa

    proofs._write_segment(lake, pa.table({"key": [ids[5]], "seq": pa.array([7], pa.int64())}), 0, 999)
    assert proofs.locate_event(lake, ids[5]) == 7
    doc = proofs.inclusion_proof(lake, ids[5])
    assert doc["leaf_index"] == 5 and proofs.verify_proof_doc(doc)[0]


def test_proof_caches_spare_the_ledger_reads_and_cannot_mislead(lake, tmp_path, monkeypatch):
    """Past INDEX_MIN_ROWS a proof reads its leaf from the one file the event index names,
    the block's leaf hashes from the leaf-hash index and tiles from the tile cache; wrong
    cache contents still give a valid proof."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(proofs, "INDEX_MIN_ROWS", 50)
    monkeypatch.setattr(proofs, "LEAF_SEGMENT_ROWS", 512)
    _ingest(lake, tmp_path, 0, 300, "b1")
    _ingest(lake, tmp_path, 300, 800, "b2")
    ids, leaves = _ids(lake)
    hashes = [merkle.leaf_hash(x) for x in leaves]
    assert proofs.verify_proof_doc(proofs.inclusion_proof(lake, ids[0]))[0]  # builds the caches
    segs = proofs._index_segments(lake, proofs.LEAF_INDEX)
    assert sorted(s[:2] for s in segs) == [(0, 512), (512, 512 + 256)]  # whole blocks, split at 512
    assert [c[0] for c in proofs._tile_caches(lake)] == [800]
    reads = []
    real = proofs.read_seq_ranges
    monkeypatch.setattr(proofs, "read_seq_ranges", lambda *a, **k: reads.append(a[1]) or real(*a, **k))
    for i in (3, 300, 511, 700, 799):
        doc = proofs.inclusion_proof(lake, ids[i])
        assert doc["proof"] == [h.hex() for h in merkle.inclusion_proof(i, hashes)]
        assert proofs.verify_proof_doc(doc)[0]
    assert reads == [[(768, 800)]]  # only the last, unindexed block came from the ledger
    # Wrong leaf hashes, a wrong tile and a wrong file pointer: still the right proof.
    proofs._write_leaf_segment(lake, 0, 512, b"\x07" * 32 * 512)
    cache = proofs._tile_caches(lake)[0][1]
    pq.write_table(pa.table({"node": pa.array([(9 << 48) | 0], pa.int64()),
                                     "hash": pa.array([b"\x01" * 32], pa.binary(32))}), cache)
    other = next(p for p in lake.delta("ledger").file_uris())
    proofs._write_segment(lake, pa.table({"key": [ids[100]], "seq": pa.array([100], pa.int64()),
                                          "file": [other.rsplit("/tables/ledger/", 1)[-1]]}), 0, 9999)
    for i in (100, 600):
        doc = proofs.inclusion_proof(lake, ids[i])
        assert doc["proof"] == [h.hex() for h in merkle.inclusion_proof(i, hashes)]
        assert proofs.verify_proof_doc(doc)[0]


def test_a_cache_that_fails_to_store_is_one_warning_line(lake3, tmp_path, capsys, monkeypatch):
    """A tiles commit that fails (here: the store refuses) warns in one line, without the
    colour codes and backtrace frames delta-rs puts in its errors, and the ingest goes on."""
    from auditlake.lake import tables

    def refused(*args, **kwargs):
        raise proofs.AuditlakeError("Generic error\n  \x1b[31m↳\x1b[0m Permission denied\n   0: <unknown>\n   1: <unknown>")

    monkeypatch.setattr(tables, "append", refused)
    proofs.write_tiles(lake3, [(8, 1, b"\x01" * 32)])
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "\x1b" not in err and "<unknown>" not in err, err
    assert err.startswith("auditlake: warning: tiles not stored") and "Permission denied" in err
