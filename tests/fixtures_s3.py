"""S3 fixtures: moto's standalone server (`python -m moto.server`) as a separate process on
127.0.0.1, a fresh Object Lock bucket per test with the standard AWS_* variables pointing at
it, and lake parametrisation so a test runs on a local folder and on S3 alike.

Also small helpers shared by the storage tests: contract-valid landing files with a known
number of lines and planted bad lines, and the lake's counts read back from its tables.
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    endpoint: str
    proc: subprocess.Popen
    log: Path
    port: int

    def requests(self) -> int:
        """Requests served so far (lines of the access log)."""
        try:
            return sum(1 for line in self.log.read_text(errors="replace").splitlines() if '" ' in line and "HTTP/1.1" in line)
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_moto(log: Path, port: int | None = None) -> MotoServer:
    """Start `python -m moto.server` on a free port and wait until it answers."""
    for attempt in range(5):
        p = port or free_port()
        out = open(log, "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(p)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()
        endpoint = f"http://127.0.0.1:{p}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).read()
                return MotoServer(endpoint, proc, log, p)
            except OSError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
        if port:
            break
    raise RuntimeError(f"moto server did not start; see {log}")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """One moto S3 server process for the session (per xdist worker)."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = start_moto(log)
    yield server
    server.stop()


def s3_environ(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _clear_aws(monkeypatch) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
                 "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """The standard AWS variables pointing at the moto server (inherited by subprocesses)."""
    _clear_aws(monkeypatch)
    for k, v in s3_environ(moto_server.endpoint).items():
        monkeypatch.setenv(k, v)
    return moto_server


def s3_client(endpoint: str):
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION)


def create_worm_bucket(endpoint: str, name: str | None = None) -> str:
    name = name or f"al-{uuid.uuid4().hex[:16]}"
    s3_client(endpoint).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh bucket with versioning and Object Lock (moto keeps it in memory)."""
    return create_worm_bucket(s3_env.endpoint)


@pytest.fixture
def s3_lake_uri(s3_bucket):
    return f"s3://{s3_bucket}/lake"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake_uri(request, tmp_path):
    """The same test on a local folder and on an S3 lake."""
    if request.param == "local":
        return str(tmp_path / "lake")
    return request.getfixturevalue("s3_lake_uri")


# ----------------------------------------------------------------------------- landing data
BASE_TIME = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def event_line(rnd: random.Random, i: int, base: datetime = BASE_TIME, days: int = 5) -> str:
    t = base + timedelta(seconds=rnd.randrange(days * 86400), milliseconds=rnd.randrange(1000))
    eid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    kind = i % 3
    if kind == 0:
        ev = {"event_type": "call.completed", "subject": None,
              "data": {"call_id": f"call-{i}", "duration_s": rnd.randrange(900), "disposition": "answered"}}
    elif kind == 1:
        ev = {"event_type": "call.started",
              "subject": {"id": f"subj-{rnd.randrange(500)}", "phone": f"+1555{rnd.randrange(10**7):07d}",
                          "country": "US", "region": "CA", "timezone": "America/Los_Angeles"},
              "data": {"call_id": f"call-{i}", "direction": "outbound", "purpose": "telemarketing",
                       "campaign_id": f"camp-{rnd.randrange(20)}", "publisher_id": f"pub-{rnd.randrange(50)}"}}
    else:
        ev = {"event_type": "bid.placed", "subject": None,
              "data": {"bid_id": f"bid-{i}", "call_id": f"call-{i}", "buyer_id": f"buyer-{rnd.randrange(30)}",
                       "amount": f"{rnd.randrange(100, 5000) / 100:.2f}", "currency": "USD"}}
    body = {"event_id": eid, "occurred_at": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
            "source": "routing-engine", "tenant_id": f"tenant-{rnd.randrange(4)}",
            "actor": {"type": "service", "id": "router"}, "lawful_basis": "contract", **ev}
    return json.dumps(body, separators=(",", ":"))


BAD_LINES = ["{not json", '{"event_id": "nope"}', "[]"]


def write_landing(path: Path, lines: int, seed: int = 0, bad_every: int = 0, replay_from: list[str] | None = None) -> dict:
    """A JSONL landing file of exactly `lines` lines; every `bad_every`-th line breaks the
    contract. Returns {"lines", "bad", "event_ids"}."""
    rnd = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids, bad = [], 0
    with open(path, "w") as f:
        for i in range(lines):
            if bad_every and i % bad_every == bad_every - 1:
                f.write(BAD_LINES[i % len(BAD_LINES)] + "\n")
                bad += 1
                continue
            line = event_line(rnd, seed * 10_000_000 + i)
            ids.append(json.loads(line)["event_id"])
            f.write(line + "\n")
    return {"lines": lines, "bad": bad, "event_ids": ids}


def write_landing_set(folder: Path, files: int, lines: int, seed: int = 0, bad_every: int = 0) -> dict:
    total = {"lines": 0, "bad": 0, "event_ids": []}
    for n in range(files):
        r = write_landing(folder / f"part-{seed}-{n:03d}.jsonl", lines, seed=seed * 1000 + n, bad_every=bad_every)
        total["lines"] += r["lines"]
        total["bad"] += r["bad"]
        total["event_ids"] += r["event_ids"]
    return total


# ----------------------------------------------------------------------------- reading a lake back
def lake_counts(uri: str) -> dict:
    """What the lake holds: ledger rows, seqs, event ids, quarantine and ingest-log rows."""
    from auditlake.lake.store import Lake

    lake = Lake.open(uri)

    def read(name, cols):
        dt = lake.delta(name)
        return None if dt is None else dt.to_pyarrow_dataset().to_table(columns=cols)

    ledger = read("ledger", ["seq", "event_id", "source_sha256", "source_line"])
    quarantine = read("quarantine", ["source_sha256", "line", "reason"])
    log = read("ingest_log", ["source_sha256", "lines_read", "accepted", "quarantined"])
    seqs = sorted(ledger.column("seq").to_pylist()) if ledger is not None else []
    eids = ledger.column("event_id").to_pylist() if ledger is not None else []
    lines = []
    if ledger is not None:
        lines += list(zip(ledger.column("source_sha256").to_pylist(), ledger.column("source_line").to_pylist()))
    if quarantine is not None:
        lines += list(zip(quarantine.column("source_sha256").to_pylist(), quarantine.column("line").to_pylist()))
    return {
        "accepted": len(seqs),
        "quarantined": 0 if quarantine is None else quarantine.num_rows,
        "seqs": seqs,
        "event_ids": eids,
        "lines": lines,  # (file sha, line) of every accepted or quarantined line
        "logged": {} if log is None else {r["source_sha256"]: r for r in log.to_pylist()},
    }


def assert_exact(uri: str, expected_lines: int, expected_ids: list[str] | None = None, files: int | None = None) -> dict:
    """Every landing line accounted for exactly once; seq gap-free; no duplicate event."""
    c = lake_counts(uri)
    assert c["accepted"] + c["quarantined"] == expected_lines, (c["accepted"], c["quarantined"], expected_lines)
    assert len(set(c["lines"])) == len(c["lines"]) == expected_lines, "a landing line was sealed or quarantined twice"
    assert c["seqs"] == list(range(c["accepted"])), "seq is not gap-free 0..n-1"
    assert len(set(c["event_ids"])) == len(c["event_ids"]), "an event was sealed twice"
    if expected_ids is not None:
        assert sorted(c["event_ids"]) == sorted(expected_ids)
    if files is not None:
        assert len(c["logged"]) == files
        for r in c["logged"].values():
            assert r["accepted"] + r["quarantined"] == r["lines_read"]
    return c


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m auditlake.cli ARGS` in a subprocess (the environment of the test, plus `env`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "auditlake.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"auditlake {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


# ----------------------------------------------------------------------------- an endpoint that can go down
class TcpProxy:
    """A TCP forwarder in front of the S3 server that can be taken down (listener closed,
    open connections reset) and brought back on the same port: an S3 outage that keeps the
    server's data, which stopping moto itself would lose."""

    def __init__(self, target_port: int, port: int | None = None):
        import threading

        self.target = ("127.0.0.1", target_port)
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import threading

        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            ls, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                c.close()
            except OSError:
                pass

    def _accept(self, ls: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not ls:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
