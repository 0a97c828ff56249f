"""The explorer's SQL console, run in worker processes of bounded memory.

A console query is checked (catalog.check_analyst_sql) and capped in rows and bytes, but
one value can still be huge (`SELECT repeat('a', 1500000000)` allocates 1.5 GB before the
first row comes back, outside DuckDB's memory limit), and masking a large result is
seconds of Python. So each query runs in a worker process (`python -m auditlake.console
LAKE`) whose data segment is limited (RLIMIT_DATA): an allocation past it fails inside
DuckDB with an out-of-memory error, and a worker that does not answer in time is killed.
The explorer's server keeps its memory and its other sessions keep their speed. WORKERS
queries run at once (bounding the memory all can take); idle workers are kept (their
start, about a second, is paid once); one that failed is dropped.

Protocol, one query at a time per worker: a JSON line in (`sql`, `limit`, `timeout_s`,
`max_bytes`); out, a 9-byte header (`T` a table, `C` a capped table, `E` an error; then the
payload's length, little-endian u64) and the payload: an Arrow IPC stream or the error's text.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref

from .catalog import ANALYST_BYTES, AnalystSQLError
from .lake.store import Lake

CONSOLE_MEMORY = 3 << 30  # a worker's data segment: DuckDB's 2 GB limit, Arrow and Python
WORKERS = 2  # queries at once (the rest wait their turn), and workers kept idle for the next
GRACE_S = 20.0  # past the query's own time limit (DuckDB interrupts it), the worker is killed
_HEADER = struct.Struct("<cQ")


class Console:
    """The SQL console of one lake: `run(sql)` -> (masked pyarrow Table, capped)."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._idle: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._turns = threading.BoundedSemaphore(WORKERS)
        # Idle workers end with the console, also when it is dropped without close().
        self._finalizer = weakref.finalize(self, _stop_all, self._idle)

    def run(self, sql: str, limit: int = 10_000, timeout_s: float = 30.0, max_bytes: int = ANALYST_BYTES):
        import pyarrow as pa

        if not self._turns.acquire(timeout=timeout_s):
            raise AnalystSQLError("the console is busy with other queries; try again")
        try:
            deadline = time.monotonic() + timeout_s + GRACE_S
            try:
                worker = self._take()
            except OSError as exc:  # no process to be had (process or file limits)
                raise AnalystSQLError(f"the console cannot start a worker ({exc.strerror or exc}); try again") from None
            try:
                request = json.dumps({"sql": sql, "limit": limit, "timeout_s": timeout_s, "max_bytes": max_bytes})
                worker.stdin.write(request.encode() + b"\n")
                worker.stdin.flush()
                kind, payload = _receive(worker, deadline)
            except OSError as exc:  # the worker's pipe broke: it is gone
                _stop(worker)
                raise AnalystSQLError(f"the query's worker stopped ({exc.strerror or exc}); try again") from None
            except BaseException:
                _stop(worker)
                raise
            self._give_back(worker)
        finally:
            self._turns.release()
        if kind == b"E":
            raise AnalystSQLError(payload.decode("utf-8", "replace"))
        return pa.ipc.open_stream(payload).read_all(), kind == b"C"

    def close(self) -> None:
        self._finalizer()

    def _take(self) -> subprocess.Popen:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.poll() is None:
                    return worker
                _stop(worker)
        # Its own temporary folder (DuckDB spills there), removed with it even when killed.
        tmp = tempfile.mkdtemp(prefix="auditlake-console-")
        try:
            # -P: nothing is imported from the server's working folder.
            worker = subprocess.Popen(
                [sys.executable, "-P", "-m", "auditlake.console", self.lake.uri],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
                env={**os.environ, "TMPDIR": tmp},
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        worker.tmp = tmp
        return worker

    def _give_back(self, worker: subprocess.Popen) -> None:
        with self._lock:
            if self._finalizer.alive and len(self._idle) < WORKERS:
                self._idle.append(worker)
                return
        _stop(worker)


def _receive(worker: subprocess.Popen, deadline: float) -> tuple[bytes, bytes]:
    kind, size = _HEADER.unpack(_read(worker, _HEADER.size, deadline))
    return kind, _read(worker, size, deadline)


def _read(worker: subprocess.Popen, n: int, deadline: float) -> bytes:
    chunks, got = [], 0
    fd = worker.stdout.fileno()
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AnalystSQLError("the query did not finish in time and was stopped")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise AnalystSQLError("the query's worker stopped (out of memory or killed); the query was not run to the end")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _stop(worker: subprocess.Popen) -> None:
    worker.kill()
    worker.wait()
    for stream in (worker.stdin, worker.stdout):
        stream.close()
    shutil.rmtree(worker.tmp, ignore_errors=True)


def _stop_all(workers: list[subprocess.Popen]) -> None:
    while workers:
        _stop(workers.pop())


# ----------------------------------------------------------------------------- worker
def _serve(uri: str) -> None:
    import resource

    import pyarrow as pa

    resource.setrlimit(resource.RLIMIT_DATA, (CONSOLE_MEMORY, CONSOLE_MEMORY))
    # The protocol has stdout to itself: anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        from .catalog import Explorer

        explorer, failed = Explorer(Lake.open(uri)), None
    except Exception as exc:  # noqa: BLE001 - said in answer to every query
        explorer, failed = None, f"the console could not open the lake: {exc.__class__.__name__}: {str(exc)[:300]}"
    for line in sys.stdin.buffer:
        try:
            if failed:
                raise AnalystSQLError(failed)
            req = json.loads(line)
            explorer.versions()  # new tables and erasures, as the explorer sees them
            table, capped = explorer.analyst_query(req["sql"], req["limit"], req["timeout_s"], req["max_bytes"])
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            kind, payload = (b"C" if capped else b"T"), sink.getvalue().to_pybytes()
        except AnalystSQLError as exc:
            kind, payload = b"E", str(exc).encode()
        except MemoryError:
            kind, payload = b"E", b"the query needs more memory than the console allows"
        except Exception as exc:  # noqa: BLE001 - DuckDB's errors (out of memory, interrupted) are answers
            kind, payload = b"E", f"{exc.__class__.__name__}: {str(exc)[:1000]}".encode()
        out.write(_HEADER.pack(kind, len(payload)) + payload)
        out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1])
