"""Sealing landing records into ledger rows: parse, contract check, PII sealing and the
canonical record (docs/LEDGER.md).

Sealing needs the lake's keys but no ledger state: the two members of a record that depend
on it, `ingested_at` and `seq`, are left as gaps in the canonical bytes and filled in when
the batch commits. So `ingest` seals chunks of landing lines in worker processes while it
commits earlier batches, and a sealed chunk stays valid whatever the ledger's head is.
"""
from __future__ import annotations

import ctypes
import gc
import importlib.abc
import itertools
import os
import pickle
import platform
import queue
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .contract import MAX_LINE_BYTES, UUID_RE, validate
from .errors import AuditlakeError
from .keys import KeyStore
from .lake.tables import LEDGER
from .landing import Rejected, Unreadable, records_of, repeated_name_reason
from .ledger.canonical import (
    CanonicalError,
    canonical_json,
    canonical_json_noting_rare,
    canonical_with_fragments,
    fragment,
    loads_exact,
    may_hold_long_integer,
    repeated_name,
)
from .ledger.seal import Nonces, aad, blind_indexes, ip_owner, seal
from .masking import escape_controls, mask_raw, mask_text

# Marks the two gaps; a NUL byte never occurs in canonical JSON (control characters are
# escaped inside strings), so splitting a sealed record on it yields exactly three parts.
GAP = b"\x00"
_GAP = fragment(GAP)
# Sealed rows as they leave a worker: the ledger's columns minus those set at commit (seq,
# leaf, hash, key_id, batch_id, ingested_at), plus the record around its gaps and the raw
# line (masked into the quarantine only if the commit finds the event is a replay).
_FROM_LEDGER = (
    "event_id", "event_type", "occurred_at", "event_date", "source", "tenant_id", "actor_type", "actor_id",
    "actor_role", "actor_ip_sealed", "subject_id", "subject_country", "subject_region", "subject_timezone",
    "subject_pii_sealed", "pii_fields", "phone_bidx", "lawful_basis", "data", "source_file", "source_sha256",
    "source_line",
)
SEALED = pa.schema(
    [pa.field(n, pa.int64()) if n == "occurred_at" else LEDGER.field(n) for n in _FROM_LEDGER]  # µs since the epoch
    + [
        ("leaf_head", pa.string()),  # record up to the ingested_at gap
        ("leaf_mid", pa.string()),  # between the ingested_at and seq gaps
        ("leaf_tail", pa.string()),  # after the seq gap
        ("raw", pa.binary()),
    ]
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
# People whose data keys are kept between chunks (~160 bytes each: bounded, so memory stays
# flat), oldest out first. A keystore read costs about 10 us a person; the ciphers (~2.7 KB
# each) are made per chunk from the keys.
_KEY_CACHE = 131_072


@dataclass
class Chunk:
    """Consecutive records of one landing file, from line `first_line` on; lines in `skip`
    were committed by an earlier run and are not sealed again."""

    file: str
    sha: str
    first_line: int
    block: list[bytes] | pa.RecordBatch | Unreadable
    skip: frozenset[int] = frozenset()


@dataclass
class SealedChunk:
    rows: pa.RecordBatch  # SEALED
    bad: list[dict]  # quarantine rows without the batch's fields
    raw_bytes: int


def parse(raw: bytes | dict | Rejected | Unreadable) -> tuple[dict | None, str | None]:
    if isinstance(raw, Rejected):
        return None, raw.reason
    if isinstance(raw, dict):  # a Parquet row: as large as the JSON line it stands for
        try:
            size = len(orjson.dumps(raw, default=str))
        except TypeError:  # no JSON form (the contract check says why): its text's length
            size = len(str(raw))
        if size > MAX_LINE_BYTES:
            return None, f"line larger than 64 KiB ({size} bytes as JSON)"
        return raw, None
    if isinstance(raw, Unreadable):
        return None, mask_text(raw.reason)  # a reader's message could quote the file's bytes
    length = getattr(raw, "length", len(raw))  # a landing.LongLine keeps only its head
    if length > MAX_LINE_BYTES:
        return None, f"line larger than 64 KiB ({length} bytes)"
    if not raw.strip():
        return None, "empty line"
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if raw.startswith(b"\xef\xbb\xbf"):
            return None, "not JSON: starts with a UTF-8 byte order mark, which JSON Lines does not allow"
        # The parser's message names the problem and where (it never quotes the line), e.g.
        # "depth limit exceeded: line 1 column 5122 (char 5121)" for nesting past 1024 levels.
        return None, f"not JSON: {str(exc)[:160]}"
    if (name := repeated_name(raw)) is not None:
        return None, repeated_name_reason("the line", name)
    return event, None


REASON_MAX = 300  # characters of a quarantine reason: one line a person reads


def reason_line(reason: str) -> str:
    """A reason as one bounded line: the values it quotes are masked (they may be personal
    data: PII-shaped text, and runs of capitalised words, which no reason of ours holds),
    then control characters escaped (a producer's newline or terminal escape would forge a
    second line wherever reasons are shown), then cut."""
    reason = reason[:4 * REASON_MAX]  # masked in bounded time, whatever a producer's key quoted in it
    text = escape_controls(mask_text(reason, names=True))
    return text if len(text) <= REASON_MAX else text[:REASON_MAX - 1] + "…"


def quarantine_row(file: str, sha: str, line: int, reason: str, raw, event) -> dict:
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return {
        "source_file": file, "source_sha256": sha, "line": line, "reason": reason_line(reason),
        "raw": "" if isinstance(raw, Unreadable) else mask_raw(raw.row if isinstance(raw, Rejected) else raw),
        # Only an event id proper: a producer's column mix-up can put a phone number or a
        # name there, which `raw` shows masked.
        "event_id": event_id if isinstance(event_id, str) and UUID_RE.match(event_id) else None,
    }


class Sealer:
    def __init__(self, keys: KeyStore):
        self.keys = keys
        self.bidx_key = keys.bidx_key
        self._ciphers: dict[str, AESGCM | None] = {}
        self._keys: dict[str, bytes | None] = {}  # None: erased
        self._nonces = Nonces()

    def _prepare(self, events: list[dict]) -> None:
        """Load (or create) the data keys of every person in these events, in bulk."""
        ids = set()
        for ev in events:
            subject = ev.get("subject")
            if isinstance(subject, dict):
                ids.add(subject["id"])
            if ev["actor"].get("ip"):
                ids.add(ip_owner(ev["actor"]["type"], ev["actor"]["id"], subject["id"] if subject else None))
        load = {sid for sid in ids if sid not in self._keys}  # not ids - keys(): that walks every key
        if load:
            excess = len(self._keys) + len(load) - _KEY_CACHE
            if excess > 0:  # the oldest, never one this chunk needs
                old = [sid for sid in itertools.islice(self._keys, excess + len(ids)) if sid not in ids]
                for sid in old[:excess]:
                    del self._keys[sid]
            erased = self.keys.is_erased(load)
            found = self.keys.data_keys(load - erased)
            # An erased person's new PII is not kept at all (None); one erased since is left out.
            self._keys.update({sid: found.get(sid) for sid in load})
        self._ciphers = {sid: None if (key := self._keys[sid]) is None else AESGCM(key) for sid in ids}

    def seal_chunk(self, chunk: Chunk) -> SealedChunk:
        good, bad, raw_bytes = [], [], 0
        for line, raw in enumerate(records_of(chunk.block), chunk.first_line):
            if line in chunk.skip:
                continue
            raw_bytes += len(raw) if isinstance(raw, bytes) else 1024
            event, reason = parse(raw)
            if reason is None:
                occurred, reason = validate(event)
            if reason is None:
                good.append((line, raw, event, occurred))
            else:
                bad.append(quarantine_row(chunk.file, chunk.sha, line, reason, raw, event))
        self._prepare([g[2] for g in good])
        phones = [(g[2].get("subject") or {}).get("phone") or None for g in good]
        rows = []
        for (line, raw, event, occurred), bidx in zip(good, blind_indexes(self.bidx_key, phones)):
            try:
                rows.append(self._row(event, occurred, chunk, line, raw, bidx))
            except CanonicalError as exc:
                bad.append(quarantine_row(chunk.file, chunk.sha, line, f"data has no canonical JSON form: {exc}", raw, event))
            except RecursionError:  # the canonicalizer recurses once per level
                bad.append(quarantine_row(chunk.file, chunk.sha, line, "data has no canonical JSON form: nested too deeply", raw, event))
        columns = zip(*rows) if rows else [[] for _ in SEALED]
        batch = pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(columns, SEALED)], schema=SEALED)
        return SealedChunk(batch, bad, raw_bytes)

    def _row(self, ev: dict, occurred: datetime, chunk: Chunk, line: int, raw, bidx: str | None) -> tuple:
        """One sealed row; `bidx` is the blind index of the subject's phone (None without one)."""
        event_id = ev["event_id"]
        actor = ev["actor"]
        subject = ev.get("subject")
        pii_fields = []
        ip = actor.get("ip")
        ip_sealed = None
        if ip:
            pii_fields.append("actor.ip")
            cipher = self._ciphers[ip_owner(actor["type"], actor["id"], subject["id"] if subject else None)]
            ip_sealed = (seal(cipher, canonical_with_fragments({"ip": ip}), aad(event_id, "actor"), self._nonces.take())
                         if cipher else None)
        subject_rec = None
        if subject is not None:
            pii = {k: subject[k] for k in ("email", "name", "phone") if subject.get(k)}
            pii_fields.extend(f"subject.{k}" for k in pii)
            cipher = self._ciphers[subject["id"]]
            sealed = (seal(cipher, canonical_with_fragments(pii), aad(event_id, "subject"), self._nonces.take())
                      if pii and cipher else None)
            subject_rec = {
                "id": subject["id"],
                "country": subject.get("country"),
                "region": subject.get("region"),
                "timezone": subject.get("timezone"),
                "pii": sealed,
                "phone_bidx": bidx,
            }
        pii_str = ",".join(sorted(pii_fields))
        data, rare = canonical_json_noting_rare(ev["data"])
        if rare and isinstance(raw, bytes) and may_hold_long_integer(raw):
            data = canonical_json(loads_exact(raw)["data"])  # an integer orjson read as a float: exact
        lb = ev.get("lawful_basis")
        record = {
            "v": 1,
            "seq": _GAP,
            "event_id": event_id,
            "event_type": ev["event_type"],
            "occurred_at": ev["occurred_at"],
            "ingested_at": _GAP,
            "source": ev["source"],
            "tenant_id": ev["tenant_id"],
            "actor": {"type": actor["type"], "id": actor["id"], "role": actor.get("role"), "ip": ip_sealed},
            "subject": subject_rec,
            "pii_fields": pii_str,
            "lawful_basis": lb,
            "data": fragment(data),
        }
        head, mid, tail = canonical_with_fragments(record).decode().split("\x00")  # keys sort ingested_at < seq
        s = subject_rec or {}
        return (
            event_id, ev["event_type"], (occurred - _EPOCH) // _MICROSECOND, occurred.date().isoformat(),
            ev["source"], ev["tenant_id"], actor["type"], actor["id"], actor.get("role"), ip_sealed,
            s.get("id"), s.get("country"), s.get("region"), s.get("timezone"), s.get("pii"), pii_str, bidx, lb,
            data.decode(), chunk.file, chunk.sha, line, head, mid, tail,
            raw if isinstance(raw, bytes) else orjson.dumps(raw, default=str),
        )


# ----------------------------------------------------------------------------- workers
class InlineSealing:
    """Seals in the calling process (small runs: starting workers costs more than it saves)."""

    def __init__(self, keys: KeyStore):
        self._sealer = Sealer(keys)

    def submit(self, chunk: Chunk) -> Future:
        f: Future = Future()
        try:
            f.set_result(self._sealer.seal_chunk(chunk))
        except Exception as exc:  # raised by result(), in order, as a worker's would be
            f.set_exception(exc)
        return f

    def shutdown(self) -> None:
        pass


class WorkerSealing:
    """Seals in worker processes (`python -m auditlake.sealing LOG_ID`), each fed by a thread
    over its stdin/stdout with length-prefixed pickles. Plain subprocesses rather than
    multiprocessing: spawn would re-run the caller's main script in every worker."""

    def __init__(self, keys: KeyStore, workers: int):
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self.workers = workers
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._procs = [
            subprocess.Popen([sys.executable, "-m", "auditlake.sealing", keys.log_id], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env)
            for _ in range(workers)
        ]
        self._threads = [threading.Thread(target=self._feed, args=(p,), daemon=True) for p in self._procs]
        for t in self._threads:
            t.start()

    def submit(self, chunk: Chunk) -> Future:
        f: Future = Future()
        self._jobs.put((chunk, f))
        return f

    def _feed(self, proc: subprocess.Popen) -> None:
        while (job := self._jobs.get()) is not None:
            chunk, f = job
            if not f.set_running_or_notify_cancel():
                continue
            try:
                _send(proc.stdin, chunk)
                ok, result = _receive(proc.stdout)
            except Exception as exc:  # a dead or broken worker fails the run, never hangs it
                f.set_exception(AuditlakeError(f"a sealing worker failed (exit code {proc.poll()}): {exc}"))
                continue
            if ok:
                f.set_result(result)
            else:
                f.set_exception(AuditlakeError(f"sealing worker: {result}"))

    def shutdown(self) -> None:
        """Cancel what has not started, let the workers finish and exit."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        for p in self._procs:
            p.stdin.close()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()


_LIBC = ctypes.CDLL("libc.so.6") if sys.platform == "linux" and platform.libc_ver()[0] == "glibc" else None


def release_memory() -> None:
    """Hand freed memory back to the system (Arrow's pool and glibc's arenas otherwise keep
    it), so a long run's footprint is one unit of work's, not its high-water mark."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _rss_bytes() -> int:
    """This process's resident size (0 where /proc is missing: memory is then always given back)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _send(stream, obj) -> None:
    body = pickle.dumps(obj, protocol=5)
    stream.write(struct.pack("<Q", len(body)))
    stream.write(body)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("no reply")
    (size,) = struct.unpack("<Q", head)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("truncated reply")
    return pickle.loads(body)


class _NoPandas(importlib.abc.MetaPathFinder):
    """pa.array() of a Python list imports pandas to look for pandas values, which costs
    each worker 40-55 MB and about 0.5 s; a worker never meets one, so for it pandas is not
    installed."""

    def find_spec(self, name, path, target=None):
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not used by sealing workers", name=name)
        return None


def _worker_main(log_id: str) -> None:
    sys.meta_path.insert(0, _NoPandas())
    from .kms import select_keystore

    sealer = Sealer(select_keystore(log_id))
    os.nice(5)  # the ingest process's commits are the critical path: workers fill the gaps
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the reply stream
    # A chunk's objects (parsed JSON trees, rows) hold no cycles and die with the chunk, so
    # the cyclic collector's passes while it is sealed cost about a tenth of the worker's
    # time for nothing; one pass after each chunk still frees any cycle.
    gc.freeze()
    gc.disable()
    # Freed memory is given back only above twice the idle size: giving it back after every
    # chunk made the next chunk fault it in again (a third of ingest's page faults).
    keep = 2 * _rss_bytes()
    while True:
        try:
            chunk = _receive(stdin)
        except EOFError:
            return
        try:
            reply = (True, sealer.seal_chunk(chunk))
        except Exception as exc:  # reported to the ingest process, which fails the run
            reply = (False, f"{type(exc).__name__}: {exc}")
        _send(stdout, reply)
        del chunk, reply
        gc.collect()
        if _rss_bytes() >= keep:
            release_memory()


if __name__ == "__main__":
    # Through the package module, so that pickled results name auditlake.sealing, not __main__.
    from auditlake.sealing import _worker_main as main

    main(sys.argv[1])
