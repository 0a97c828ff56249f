"""The local keystore: chain HMAC keys, Ed25519 signing keys, the blind-index key and the
per-subject data keys, kept outside the lake in files readable by the owner only.

Data keys are wrapped by a key-encryption key (`KeyWrapper`): a local KEK by default, AWS
KMS in S3 deployments. Erasure deletes the wrapped key with SQLite's secure_delete and a
VACUUM, in rollback-journal mode, so no page, WAL frame or journal keeps a copy.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import AuditlakeError
from .inputs import file_sha256


def auditlake_home() -> Path:
    return Path(os.environ.get("AUDITLAKE_HOME") or Path.home() / ".auditlake")


def trust_dir() -> Path:
    """The verifier's memory of each log, outside the lake: the last verified checkpoint
    and the retention manifests seen."""
    return auditlake_home() / "trust"


LOG_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def valid_log_id(log_id: object) -> bool:
    """A log id names a folder of this host's: one name, never a path ("../x" would let a
    lake's identity file pick keys it planted anywhere, even inside the lake)."""
    return isinstance(log_id, str) and LOG_ID_RE.fullmatch(log_id) is not None and ".." not in log_id


def keystore_dir(log_id: str, root: Path | None = None) -> Path:
    """The folder of a log's keystore (under AUDITLAKE_HOME unless another `root` is given)."""
    if not valid_log_id(log_id):
        raise AuditlakeError(f"{str(log_id)[:80]!r} is no log id")
    return (root or auditlake_home() / "keystores") / log_id


def keystore_exists(log_id: str) -> bool:
    """Whether this host's AUDITLAKE_HOME holds a keystore of the log (KeyStore() makes one)."""
    return valid_log_id(log_id) and (keystore_dir(log_id) / "keys.json").exists()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


def public_key_b64(key: Ed25519PublicKey) -> str:
    return _b64(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def load_public_key(b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_unb64(b64))


def signing_key_id(key: Ed25519PublicKey) -> str:
    import hashlib

    return "sk-" + hashlib.sha256(_unb64(public_key_b64(key))).hexdigest()[:12]


class KeyWrapper(Protocol):
    def wrap(self, subject_id: str, key: bytes) -> bytes: ...
    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes: ...


class LocalKeyWrapper:
    """Wraps data keys with a local AES-256-GCM key-encryption key."""

    def __init__(self, kek: bytes):
        self._aead = AESGCM(kek)

    def wrap(self, subject_id: str, key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, key, subject_id.encode())

    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:12], wrapped[12:], subject_id.encode())


def _insert_keys(con: sqlite3.Connection, rows: list[tuple[str, bytes]]) -> bool:
    """Store new wrapped data keys unless the subject has one or is erased, asked in the
    transaction that inserts (an erasure committed since the caller looked must not be
    outlived by a new key); True if all were stored."""
    before = con.total_changes
    con.execute("BEGIN IMMEDIATE")
    con.executemany("INSERT OR IGNORE INTO datakeys SELECT ?1, ?2 WHERE NOT EXISTS "
                    "(SELECT 1 FROM erased WHERE subject_id = ?1)", rows)
    con.execute("COMMIT")
    return con.total_changes - before == len(rows)


def _private_temp(path: Path, text: str) -> Path:
    """A fully written, fsynced 0600 file beside `path`, with a name no other writer uses."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _stamp(path: Path) -> tuple[int, int, int]:
    """Which file is at `path` now (a replaced one differs)."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


ROTATION_LOG_S = 600  # a rotating process still there after this has stopped logging its rotation


def _alive(pid) -> bool:
    """Whether a process of this host has that id (the keystore is this host's)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_private(path: Path, text: str) -> None:
    """Replace the file whole (0600): a reader never sees it half-written, a crash leaves
    the old one."""
    os.replace(_private_temp(path, text), path)


def _create_private(path: Path, text: str) -> None:
    """Create the file only if it does not exist: concurrent first runs agree on one keystore."""
    tmp = _private_temp(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


class KeyStore:
    """Keys of one log. Created on first use; `keys.json` and `datakeys.sqlite` are 0600."""

    def __init__(self, log_id: str, root: Path | None = None, wrapper: KeyWrapper | None = None):
        self.log_id = log_id
        self.dir = keystore_dir(log_id, root)
        self._lock = threading.Lock()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self._path = self.dir / "keys.json"
        if not self._path.exists():
            self._create()
        self._keys = self._load()
        self.wrapper: KeyWrapper = wrapper or LocalKeyWrapper(_unb64(self._keys["kek"]))
        self._db_path = self.dir / "datakeys.sqlite"

    def _load(self) -> dict:
        """keys.json, checked whole: a damaged file, or another log's, is one line naming it
        (another log's keys would make every signature and link of this lake read as forged).
        Notes which file it read (see _fresh)."""
        try:
            self._stamp = _stamp(self._path)
            keys = json.loads(self._path.read_text())
            for part in ("chain", "signing"):
                keys[part]["keys"][keys[part]["current"]]  # the current key is one of the keys
            for v in keys["chain"]["keys"].values():
                _unb64(v)
            for v in keys["signing"]["keys"].values():
                Ed25519PrivateKey.from_private_bytes(_unb64(v))
            _unb64(keys["bidx"]["key"])
            AESGCM(_unb64(keys["kek"]))
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise AuditlakeError(f"the keystore file {self._path} is damaged ({type(exc).__name__}: "
                                 f"{str(exc)[:120]}): restore it from a backup") from exc
        if keys.get("log_id") != self.log_id:
            raise AuditlakeError(f"the keystore file {self._path} holds the keys of log {keys.get('log_id')}, not of "
                                 f"{self.log_id}: put that log's own keys.json there")
        return keys

    def _fresh(self) -> dict:
        """The keys as keys.json holds them now: another process may have rotated them (it is
        replaced whole, so a read needs no lock). A writer then chains and signs with the
        newest keys, and finds the commits and rows other writers made with them its own."""
        try:
            moved = _stamp(self._path) != self._stamp
        except OSError:
            moved = False
        if moved:
            self._keys = self._load()  # (the data-key store's note is in the file once made)
        return self._keys

    @contextlib.contextmanager
    def _exclusive(self):
        """This keystore to one writer at a time, across processes (a rotation reads, adds to
        and writes keys.json: two at once would each drop the other's keys)."""
        with self._lock, os.fdopen(os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)) as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- creation and rotation -------------------------------------------------------
    def _create(self) -> None:
        chain_id = "hk-" + secrets.token_hex(6)
        sk = Ed25519PrivateKey.generate()
        sk_id = signing_key_id(sk.public_key())
        keys = {
            "log_id": self.log_id,
            "chain": {"current": chain_id, "keys": {chain_id: _b64(secrets.token_bytes(32))}},
            "signing": {"current": sk_id, "keys": {sk_id: _b64(sk.private_bytes_raw())}},
            "bidx": {"id": "bk-" + secrets.token_hex(6), "key": _b64(secrets.token_bytes(32))},
            "kek": _b64(secrets.token_bytes(32)),
        }
        _create_private(self._path, json.dumps(keys, indent=2))  # first writer wins

    def rotate(self, publish: Callable[[KeyStore], None] | None = None) -> tuple[str, str]:
        """Add a new chain key and a new signing key; old ones stay for verification.
        `publish` is called with the keystore before another rotation can start."""
        with self._exclusive():
            self._keys = self._load()  # as another process may have rotated since
            old = {part: self._keys[part]["current"] for part in ("chain", "signing")}
            chain_id = "hk-" + secrets.token_hex(6)
            self._keys["chain"]["keys"][chain_id] = _b64(secrets.token_bytes(32))
            self._keys["chain"]["current"] = chain_id
            sk = Ed25519PrivateKey.generate()
            sk_id = signing_key_id(sk.public_key())
            self._keys["signing"]["keys"][sk_id] = _b64(sk.private_bytes_raw())
            self._keys["signing"]["current"] = sk_id
            # Until the rotation's audit event is in the ledger (rotation_logged): a rotating
            # process stopped before it leaves this note, and a later writer logs it late.
            self._keys.setdefault("unlogged_rotations", []).append(
                {"chain": [old["chain"], chain_id], "signing": [old["signing"], sk_id], "pid": os.getpid(), "at": time.time()})
            write_private(self._path, json.dumps(self._keys, indent=2))
            if publish is not None:
                publish(self)
            return chain_id, sk_id

    def unlogged_rotations(self, abandoned: bool = False) -> list[dict]:
        """Rotations not yet in the ledger ({"chain": [old, new], "signing": [old, new], "pid",
        "at"}); with `abandoned`, only those whose process is gone (or still there after
        ROTATION_LOG_S): a rotation at work logs its own."""
        notes = list(self._fresh().get("unlogged_rotations") or [])
        return [n for n in notes if not abandoned or not _alive(n.get("pid")) or time.time() - n.get("at", 0) > ROTATION_LOG_S]

    def rotation_logged(self, rotation: dict) -> None:
        """The rotation's audit event is in the ledger: its note goes."""
        with self._exclusive():
            self._keys = self._load()
            notes = self._keys.get("unlogged_rotations") or []
            if rotation in notes:
                notes.remove(rotation)
                write_private(self._path, json.dumps(self._keys, indent=2))

    # -- chain and signing -----------------------------------------------------------
    @property
    def chain_key_id(self) -> str:
        return self._fresh()["chain"]["current"]

    def chain_keys(self) -> dict[str, bytes]:
        return {k: _unb64(v) for k, v in self._fresh()["chain"]["keys"].items()}

    @property
    def signing_key_id(self) -> str:
        return self._fresh()["signing"]["current"]

    def signing_key(self) -> Ed25519PrivateKey:
        signing = self._fresh()["signing"]
        return Ed25519PrivateKey.from_private_bytes(_unb64(signing["keys"][signing["current"]]))

    def public_keys(self) -> dict[str, str]:
        """Every signing key's public half (base64 raw Ed25519), by key id, oldest first."""
        return {
            kid: public_key_b64(Ed25519PrivateKey.from_private_bytes(_unb64(v)).public_key())
            for kid, v in self._fresh()["signing"]["keys"].items()
        }

    @property
    def bidx_key(self) -> bytes:
        return _unb64(self._keys["bidx"]["key"])

    # -- data keys ---------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if not (self._keys.get("datakeys") and self._db_path.exists()):
            self._make_data_key_store()
        return self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self._db_path, timeout=60, isolation_level=None)
            os.chmod(self._db_path, 0o600)
            con.execute("PRAGMA secure_delete=ON")
            con.execute("PRAGMA journal_mode=DELETE")
            con.execute(
                "CREATE TABLE IF NOT EXISTS datakeys (subject_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL)"
            )
            con.execute("CREATE TABLE IF NOT EXISTS erased (subject_id TEXT PRIMARY KEY, erased_at TEXT NOT NULL)")
            # Files that still held a destroyed key when it was destroyed (path, SHA-256 then).
            con.execute("CREATE TABLE IF NOT EXISTS erased_key_copies (subject_id TEXT, path TEXT, sha256 TEXT, "
                        "PRIMARY KEY (subject_id, path))")
        except (sqlite3.Error, OSError) as exc:
            raise AuditlakeError(f"cannot open the data-key store {self._db_path}: {exc}") from exc
        return con

    def _make_data_key_store(self) -> None:
        """The data-key store is made once, and keys.json then notes that it exists: one that
        is gone later is refused, never made again empty (that would forget every subject's
        key and every erasure, and seal an erased person's new PII). Under the keystore's
        lock, so no process sees the note before the store."""
        with self._exclusive():
            stored = self._load()  # (its other keys as another process may have rotated them)
            if stored.get("datakeys"):
                if not self._db_path.exists():
                    raise AuditlakeError(f"the data-key store {self._db_path} is missing: the subjects' keys and the "
                                         "record of erasures are in it; restore it from a backup")
            else:
                self._connect().close()
                write_private(self._path, json.dumps({**stored, "datakeys": True}, indent=2))
            self._keys["datakeys"] = True

    def data_keys(self, subject_ids: Iterable[str], create: bool = True) -> dict[str, bytes]:
        """Data keys of these subjects, creating missing ones (never for an erased subject,
        who is left out: an erased subject's later events keep no personal data, see
        sealing)."""
        ids = sorted(set(subject_ids))
        found: dict[str, bytes] = {}
        con = self._db()
        try:
            for i in range(0, len(ids), 900):
                chunk = ids[i : i + 900]
                q = f"SELECT subject_id, wrapped FROM datakeys WHERE subject_id IN ({','.join('?' * len(chunk))})"
                for sid, wrapped in con.execute(q, chunk):
                    found[sid] = self.wrapper.unwrap(sid, wrapped)
            missing = [s for s in ids if s not in found]
            if create and missing:
                fresh = {s: secrets.token_bytes(32) for s in missing}
                if _insert_keys(con, [(s, self.wrapper.wrap(s, k)) for s, k in fresh.items()]):
                    found.update(fresh)
                    return found
                # A concurrent writer created some first: read back what won.
                for i in range(0, len(missing), 900):
                    chunk = missing[i : i + 900]
                    q = f"SELECT subject_id, wrapped FROM datakeys WHERE subject_id IN ({','.join('?' * len(chunk))})"
                    for sid, wrapped in con.execute(q, chunk):
                        found[sid] = self.wrapper.unwrap(sid, wrapped)
        finally:
            con.close()
        return found

    def is_erased(self, subject_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(subject_ids))
        out: set[str] = set()
        con = self._db()
        try:
            for i in range(0, len(ids), 900):
                chunk = ids[i : i + 900]
                q = f"SELECT subject_id FROM erased WHERE subject_id IN ({','.join('?' * len(chunk))})"
                out.update(r[0] for r in con.execute(q, chunk))
        finally:
            con.close()
        return out

    def note_key_copies(self, subject_id: str, paths: list[Path]) -> None:
        """Remember the files that still held a subject's key when it was destroyed, by their
        content now: erasing again, with the key gone, can still say they are there."""
        con = self._db()
        try:
            con.executemany("INSERT OR REPLACE INTO erased_key_copies VALUES (?, ?, ?)",
                            [(subject_id, str(p), file_sha256(p)) for p in paths if p.is_file()])
            con.commit()
        finally:
            con.close()

    def key_copies_left(self, subject_id: str) -> list[str]:
        """The files note_key_copies remembered that are still there, unchanged (they still
        hold the key) or changed (they may); a file gone is forgotten."""
        con = self._db()
        try:
            left = []
            for path, sha in con.execute("SELECT path, sha256 FROM erased_key_copies WHERE subject_id = ? ORDER BY path",
                                         (subject_id,)).fetchall():
                if not Path(path).is_file():
                    con.execute("DELETE FROM erased_key_copies WHERE subject_id = ? AND path = ?", (subject_id, path))
                    continue
                same = file_sha256(path) == sha
                left.append(f"{path} ({'unchanged since the key was destroyed' if same else 'changed since the key was destroyed: it may still hold it'})")
            con.commit()
            return left
        finally:
            con.close()

    def destroy_data_key(self, subject_id: str, erased_at: str) -> bool:
        """Crypto-shred: delete the subject's wrapped key beyond recovery. True if one existed."""
        con = self._db()
        try:
            con.execute("BEGIN IMMEDIATE")  # one step: no key can be made between the two
            cur = con.execute("DELETE FROM datakeys WHERE subject_id = ?", (subject_id,))
            con.execute("INSERT OR IGNORE INTO erased VALUES (?, ?)", (subject_id, erased_at))  # the first erasure's time
            existed = cur.rowcount > 0
            con.execute("COMMIT")
            con.execute("VACUUM")
        finally:
            con.close()
        return existed


def require_keystore(log_id: str) -> KeyStore:
    try:
        return KeyStore(log_id)
    except OSError as exc:
        raise AuditlakeError(f"cannot open the keystore for log {log_id}: {exc}") from exc
