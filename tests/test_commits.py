"""Signed commits of the tables no chain seals (auditlake.ledger.commits)."""
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlake.ledger import commits

ROWS = [("a.jsonl", 3, datetime(2026, 3, 1, 12, 0, 0, 120000, tzinfo=timezone.utc)), ("b.jsonl", None, None)]


def test_the_digest_is_of_the_rows_whatever_their_order():
    assert commits.rows_digest(ROWS) == commits.rows_digest(ROWS[::-1])
    assert commits.rows_digest(ROWS) != commits.rows_digest(ROWS[:1])
    assert commits.rows_digest(ROWS) != commits.rows_digest(ROWS + ROWS[:1])  # a duplicated row counts
    assert commits.rows_digest(ROWS) != commits.rows_digest([("a.jsonl", 4, ROWS[0][2]), ROWS[1]])
    # An instant is the same instant however its time zone is spelled or dropped.
    naive = [(r[0], r[1], r[2].replace(tzinfo=None) if r[2] else None) for r in ROWS]
    assert commits.rows_digest(naive) == commits.rows_digest(ROWS)


def test_the_digest_is_as_documented():
    import hashlib

    row = b'["a.jsonl",3,"2026-03-01T12:00:00.120000Z"]'
    other = b'["b.jsonl",null,null]'
    expected = hashlib.sha256(b"".join(sorted(hashlib.sha256(r).digest() for r in (row, other)))).hexdigest()
    assert commits.rows_digest(ROWS) == expected


def test_a_signature_binds_the_rows_to_the_log_table_and_version():
    key = Ed25519PrivateKey.generate()
    digest = commits.rows_digest(ROWS)
    body = commits.commit_body("log-1", "findings", 4, digest, "sk-1")
    signature = commits.sign(key, body)
    assert commits.signature_valid(key.public_key(), signature, body)
    for other in (commits.commit_body("log-2", "findings", 4, digest, "sk-1"),
                  commits.commit_body("log-1", "ingest_log", 4, digest, "sk-1"),
                  commits.commit_body("log-1", "findings", 5, digest, "sk-1"),
                  commits.commit_body("log-1", "findings", 4, commits.rows_digest(ROWS[:1]), "sk-1")):
        assert not commits.signature_valid(key.public_key(), signature, other)
    assert not commits.signature_valid(Ed25519PrivateKey.generate().public_key(), signature, body)
    assert not commits.signature_valid(key.public_key(), "not base64!", body)
