"""Reading landing files: JSON Lines (.jsonl, .jsonl.gz) and Parquet, from a folder or S3,
as (line number, raw bytes or row dict) in bounded memory."""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.fs as pafs

from .contract import CATALOG, MAX_LINE_BYTES
from .errors import AuditlakeError
from .lake.store import AUDIT_DIR, Lake
from .ledger.canonical import loads_exact, may_hold_long_integer, repeated_name

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Unreadable:
    """The rest of a file could not be read; quarantined as one line with this reason."""

    reason: str


@dataclass(frozen=True)
class Rejected:
    """A Parquet row that is no event before any contract check: why, and the row as read."""

    row: dict
    reason: str


def repeated_name_reason(where: str, name: str) -> str:
    return (f"not I-JSON: {where} holds the member name {json.dumps(name)[:40]} twice in one object "
            "(RFC 7493; the sealed RFC 8785 form takes each name once)")


@dataclass(frozen=True)
class LandingFile:
    fs: pafs.FileSystem
    path: str
    name: str  # as shown in the ingest log and quarantine: the path relative to the landing root or given path
    size: int
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def format(self) -> str:
        return next(s for s in SUFFIXES if self.name.endswith(s)).lstrip(".")

    def sha256(self) -> str:
        """The file's content hash, read once per LandingFile (an ingest plans with it before
        it reads the lines)."""
        if "sha256" not in self._memo:
            try:
                self._memo["sha256"] = self._content_sha256()
            except OSError as exc:
                raise self._read_error(exc) from exc
        return self._memo["sha256"]

    def _content_sha256(self) -> str:
        """The hash; a gzip file is also inflated whole on this pass (see _corruption)."""
        with self.fs.open_input_stream(self.path, compression=None) as stream:
            f = _HashingReader(stream)
            if self.format == "jsonl.gz":
                self._memo["corrupt"] = _corruption(f)
            while f.read(_CHUNK):
                pass
            return f.sha256()

    def records(self) -> Iterator[tuple[int, bytes | dict | Unreadable]]:
        """(1-based line, raw line bytes) for JSONL; (1-based row, row dict) for Parquet."""
        for first, block in self.blocks():
            for i, raw in enumerate(records_of(block)):
                yield first + i, raw

    def blocks(self, max_rows: int = 10_000) -> Iterator[tuple[int, list[bytes] | pa.RecordBatch | Unreadable]]:
        """(1-based number of the first line, consecutive records), in bounded memory: lists
        of raw lines for JSONL, record batches of up to `max_rows` for Parquet; Unreadable
        (counted as one line) ends a file that cannot be read further: its bytes read back as
        hashed, so the damage is the file's (a file that changed is an error, not quarantined)."""
        try:
            for first, block in self._parquet_blocks(max_rows) if self.format == "parquet" else self._line_blocks():
                if isinstance(block, Unreadable):
                    self._check_unchanged(self._content_sha256())
                yield first, block
        except OSError as exc:
            raise self._read_error(exc) from exc

    def _check_unchanged(self, sha256: str) -> None:
        """The bytes read are the ones planned with: a file rewritten in place while it was
        read (a producer's `cp` over it) would otherwise be logged as done, cut short."""
        if sha256 != self.sha256():
            raise AuditlakeError(f"{self.name}: changed while it was read (landing files are immutable)")

    def _read_error(self, exc: OSError) -> AuditlakeError:
        return AuditlakeError(f"cannot read landing file {self.name}: {_one_line(exc)}")

    def _line_blocks(self) -> Iterator[tuple[int, list[bytes] | Unreadable]]:
        if self.format == "jsonl.gz":
            self.sha256()  # its pass inflates the whole file: the checks run before any line is taken
            if corrupt := self._memo["corrupt"]:
                yield 1, Unreadable(f"{corrupt}: no line of the file is taken (a failed check does not say where "
                                    "the damage is)")
                return
        pending = b""
        long: LongLine | None = None  # a line past the size limit whose end is not read yet
        n = 0
        with self.fs.open_input_stream(self.path, compression=None) as stream:
            f = _HashingReader(stream)
            chunks = _gunzip(f) if self.format == "jsonl.gz" else iter(lambda: f.read(_CHUNK), b"")
            try:
                for chunk in chunks:
                    if long is not None:
                        # Only its length is still needed: the rest is counted, not kept (a
                        # line of gigabytes costs no memory and no re-joining).
                        end = chunk.find(b"\n")
                        if end < 0:
                            long.length += len(chunk)
                            continue
                        long.length += end
                        yield n + 1, [long]
                        n, long, chunk = n + 1, None, chunk[end + 1:]
                    text = pending + chunk
                    lines = text.split(b"\n")
                    pending = lines.pop()
                    if lines:
                        yield n + 1, _without_cr(lines) if b"\r" in text else lines
                        n += len(lines)
                    if len(pending) - pending.endswith(b"\r") > MAX_LINE_BYTES:  # a CR may be its CRLF's
                        long, pending = LongLine.of(pending), b""
            except _GzipDamage as exc:  # the lines before it are whole and read; the rest is one line
                what, why = exc.args
                yield n + 1, Unreadable(f"{what} after line {n}: {why}")
                return
            read = f.sha256()
        # Before the last line, which a file cut short has half of, and before the file is
        # logged as read (its lines counted).
        self._check_unchanged(read)
        if long is not None:
            yield n + 1, [long]
        elif pending:
            yield n + 1, _without_cr([pending])

    def _parquet_blocks(self, max_rows: int) -> Iterator[tuple[int, pa.RecordBatch | Unreadable]]:
        """A file that fails to parse at the same row on a second read is damaged: the rest of
        it is one Unreadable line. (A read error that does not repeat resumes at its row.)"""
        n, failed_at = 0, None
        while True:  # a read that fails further on than the last one gets a second read too
            try:
                for batch in self._parquet_batches(max_rows, skip=n):
                    yield n + 1, batch
                    n += batch.num_rows
                self._check_unchanged(self._content_sha256())  # read out of order: hashed again
                return
            except MemoryError:
                raise
            except (pa.ArrowException, OSError) as exc:
                error = _one_line(exc)
                if failed_at == n:
                    break
                failed_at = n
        yield n + 1, Unreadable(f"unreadable Parquet after row {n}: {error}")

    def _parquet_batches(self, max_rows: int, skip: int) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        with self.fs.open_input_file(self.path) as f:
            pf = pq.ParquetFile(f)
            for group in range(pf.num_row_groups):  # a read never spans two: damage is found at its row group
                rows = pf.metadata.row_group(group).num_rows
                if skip >= rows:
                    skip -= rows
                    continue
                for batch in pf.iter_batches(batch_size=max_rows, row_groups=[group]):
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    yield batch.slice(skip) if skip else batch
                    skip = 0


class _HashingReader:
    """A stream's read() that hashes the bytes it returns."""

    def __init__(self, stream):
        self._stream, self._hash = stream, hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self._stream.read(n)
        self._hash.update(data)
        return data

    def sha256(self) -> str:
        """The hash of everything the stream holds (the rest is read and hashed too)."""
        while self.read(_CHUNK):
            pass
        return self._hash.hexdigest()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class LongLine(bytes):
    """The head of a landing line longer than the contract allows, with its whole `length`
    in bytes: it is quarantined by its length, and only its head is shown."""

    length: int

    @classmethod
    def of(cls, text: bytes) -> LongLine:
        line = cls(text[:MAX_LINE_BYTES + 1])
        line.length = len(text)
        return line


def _without_cr(lines: list[bytes]) -> list[bytes]:
    """Lines ended by CRLF lose their CR (scanned for only when the text holds one)."""
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def block_size(block: list[bytes] | pa.RecordBatch | Unreadable) -> int:
    """The number of records (lines) in a block."""
    return 1 if isinstance(block, Unreadable) else len(block) if isinstance(block, list) else block.num_rows


def records_of(block: list[bytes] | pa.RecordBatch | Unreadable) -> list[bytes | dict | Rejected | Unreadable]:
    """A block's records: raw lines as they are, Parquet rows as event dicts."""
    if isinstance(block, Unreadable):
        return [block]
    if isinstance(block, list):
        return block
    # A column twice, or a struct type with a field name twice: which one a reader takes is
    # anyone's guess (pyarrow's rows take the last), so every row is rejected, shown without
    # such columns (which pyarrow cannot read as dicts).
    names = block.schema.names
    twice = {n for i, n in enumerate(names) if n in names[:i]}
    repeated = {f.name: name for f in block.schema if (name := _repeated_field(f.type)) is not None}
    if twice or repeated:
        reason = (f"not I-JSON: the file's schema holds the column {json.dumps(min(twice))[:40]} twice (which one is "
                  "meant is anyone's guess)" if twice else repeated_name_reason(f"column {next(iter(repeated))}",
                                                                                next(iter(repeated.values()))))
        shown = block.select([i for i, n in enumerate(names) if n not in twice and n not in repeated])
        return [Rejected(row, reason) for row in shown.to_pylist()]
    struct_cols = {f.name for f in block.schema if pa.types.is_struct(f.type)}
    return [_parquet_row(row, struct_cols) for row in block.to_pylist()]


def _repeated_field(t: pa.DataType) -> str | None:
    """A field name that a struct type (at any depth) holds twice."""
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        return twice if twice is not None else next(
            (r for i in range(t.num_fields) if (r := _repeated_field(t.field(i).type)) is not None), None)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _repeated_field(t.value_type)
    if pa.types.is_map(t):
        return _repeated_field(t.item_type)
    return None


def _parquet_row(row: dict, struct_cols: set[str]) -> dict | Rejected:
    """A Parquet row as an event: JSON-string columns parsed; a struct column's null members
    dropped (a struct column holds the union of all rows' fields, so null means absent), bar
    the data members the contract says are present even when null (config.changed's old_value
    of a new setting)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str) and k in ("actor", "subject", "data"):
            try:
                text, v = v.encode(), orjson.loads(v)
                # (One past the line limit is rejected by its size: not scanned.)
                if len(text) <= MAX_LINE_BYTES and (name := repeated_name(text)) is not None:
                    return Rejected(row, repeated_name_reason(f"column {k}", name))
                if k == "data" and may_hold_long_integer(text):
                    v = loads_exact(text)  # orjson reads an integer beyond 64 bits as a float
            except (orjson.JSONDecodeError, ValueError):
                pass  # left as a string: the contract check reports the wrong type
        elif k in struct_cols and isinstance(v, dict):
            spec = CATALOG.get(row.get("event_type")) if k == "data" and isinstance(row.get("event_type"), str) else None
            present = spec.get("present", ()) if spec else ()
            v = {kk: vv for kk, vv in v.items() if vv is not None or kk in present}
        if v is None and k not in ("subject", "lawful_basis"):
            continue
        out[k] = v
    return out


def find(lake: Lake, paths: list[str] | None, ignored: list[dict] | None = None) -> list[LandingFile]:
    """Landing files under the given files/folders, or the lake's landing/ when none. What a
    folder holds that is no landing file is added to `ignored` ({"file", "reason"}), except
    hidden files (in-progress uploads): other suffixes, symbolic links (never followed out of
    a folder: they could reach any file on the machine, or loop), names that are not UTF-8."""
    landing_root = lake.fs_path(lake.child("landing"))[1] + "/"
    lake_root = None if lake.is_s3 else os.path.realpath(lake.uri)
    lake_landing = (landing_root, lake.fs_path(lake.child(AUDIT_DIR))[1] + "/")
    roots = paths or [lake.child("landing")]
    found: dict[str, LandingFile] = {}
    ignored = [] if ignored is None else ignored

    def name_of(path: str, base: str) -> str:
        # Inside the lake's landing/ a file is named by its path there (day folders kept).
        return path[len(landing_root):] if path.startswith(landing_root) else posixpath.relpath(path, base)

    for root in roots:
        fs, path = lake.fs_path(root)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            if not paths:
                continue
            raise AuditlakeError(f"no such landing file or folder: {root}")
        if info.type not in (pafs.FileType.File, pafs.FileType.Directory):
            raise AuditlakeError(f"not a regular file or folder (a pipe, socket or device): {root}")
        if lake_root and _inside(os.path.realpath(path), lake_root) and not (path + "/").startswith(lake_landing):
            raise AuditlakeError(f"{root} is the lake's own data, not landing data (its landing files go in "
                                 f"{landing_root.rstrip('/')}, ingested when no path is given)")
        if info.type == pafs.FileType.File:
            if not path.endswith(SUFFIXES):
                raise AuditlakeError(f"not a landing file (.jsonl, .jsonl.gz or .parquet): {root}")
            found[path] = LandingFile(fs, path, name_of(path, posixpath.dirname(path)), info.size)
            continue
        for item_path, size, why in _walk(fs, path, lake_root):
            name = name_of(item_path, path)
            if why is None and not item_path.endswith(SUFFIXES):
                why = "not a landing file (.jsonl, .jsonl.gz or .parquet)"
            if why is not None:
                ignored.append({"file": name, "reason": why})
            else:
                found[item_path] = LandingFile(fs, item_path, name, size)
    return sorted(found.values(), key=lambda f: (f.name, f.path))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _walk(fs: pafs.FileSystem, path: str, lake_root: str | None = None) -> Iterator[tuple[str, int, str | None]]:
    """(path, size, why it is no landing file or None) of the files in a folder, hidden
    files and folders left out, and the lake's own folder (`lake_root`) said and not read."""
    if not isinstance(fs, pafs.LocalFileSystem):
        for item in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
            if item.type == pafs.FileType.File and not _hidden(posixpath.relpath(item.path, path)):
                yield item.path, item.size, None
        return
    for folder, dirs, files in os.walk(path, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if lake_root and lake_root in (os.path.join(folder, d) for d in dirs):
            dirs.remove(os.path.basename(lake_root))
            yield lake_root, 0, "the lake's own folder: its data is no landing data"
        for name in [d for d in dirs if os.path.islink(os.path.join(folder, d))] + sorted(files):
            full = os.path.join(folder, name)
            if name.startswith("."):
                continue
            if os.path.islink(full):
                yield _printable(full), 0, "a symbolic link: not followed"
            elif not _utf8(name):
                yield _printable(full), 0, "the file name is not UTF-8"
            else:
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue  # removed since it was listed
                if stat.S_ISREG(st.st_mode):
                    yield full, st.st_size, None
                else:  # opening a pipe waits for a writer, a device reads forever
                    yield _printable(full), 0, "not a regular file (a pipe, socket or device): not opened"


class _GzipDamage(Exception):
    """Where a gzip file stops being readable: what (args[0]) and why (args[1])."""


_GZIP_SLICE = 1 << 16  # input per inflate call: a call that fails loses its output, so keep it small


def _gunzip(f) -> Iterator[bytes]:
    """The inflated bytes of a gzip file of one or more members in pieces of about _CHUNK
    (ingest seals a piece's lines as one chunk or more), up to _GzipDamage where it is
    corrupt (a bad CRC fails the whole last slice of its member), holds something after a
    member that is no member, or ends inside a member."""
    pieces, size = [], 0
    try:
        for out in _inflate(f):
            pieces.append(out)
            size += len(out)
            if size >= _CHUNK:
                yield b"".join(pieces)
                pieces, size = [], 0
    except _GzipDamage:
        if pieces:
            yield b"".join(pieces)
        raise
    if pieces:
        yield b"".join(pieces)


def _corruption(f) -> str | None:
    """Why a gzip file's data is corrupt (a member's CRC or length check failed, or its
    deflate data is invalid), else None, reading it to the end: such a failure does not say
    where the damage is, so no line of the file can be trusted, not even those before it. A
    file cut off or followed by something that is no member keeps its checked lines."""
    try:
        for _ in _inflate(f):
            pass
    except _GzipDamage as exc:
        what, why = exc.args
        if what == "corrupt gzip stream":
            return f"{what} ({why})"
    return None


def _inflate(f) -> Iterator[bytes]:
    """_gunzip's inflated bytes as each slice of input gives them."""
    inflate, fed, members = zlib.decompressobj(wbits=47), False, 0
    while data := f.read(_CHUNK):
        for i in range(0, len(data), _GZIP_SLICE):
            piece = data[i:i + _GZIP_SLICE]
            while piece:
                try:
                    out = inflate.decompress(piece)
                except zlib.error as exc:
                    raise _GzipDamage("data after the end of the gzip stream" if members and not fed
                                      else "corrupt gzip stream", str(exc)) from None
                fed = True
                if out:
                    yield out
                if not inflate.eof:
                    break
                # A gzip file may hold several members; whatever follows one must be the next.
                members += 1
                piece, inflate, fed = inflate.unused_data, zlib.decompressobj(wbits=47), False
    if fed:
        raise _GzipDamage("gzip stream cut off", "the file ends inside a member")


def _hidden(rel: str) -> bool:
    return any(p.startswith(".") for p in rel.split("/"))


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # os.walk keeps undecodable bytes as lone surrogates
        return False


def _printable(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
