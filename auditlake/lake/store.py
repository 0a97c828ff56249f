"""Where a lake lives: a local folder or s3://bucket/prefix, with one code path for both.

Files go through pyarrow's filesystem layer; Delta tables through deltalake with the
same storage options. S3 settings are the standard AWS ones (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION / AWS_DEFAULT_REGION, AWS_PROFILE).
"""
from __future__ import annotations

import json
import os
import posixpath
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import AuditlakeError


def default_lake_uri() -> str:
    return os.environ.get("AUDITLAKE_LAKE") or "./lake"


def _s3_settings() -> dict[str, str]:
    """The standard AWS settings from the environment (and profile, via boto3)."""
    import boto3

    session = boto3.session.Session(profile_name=os.environ.get("AWS_PROFILE") or None)
    creds = session.get_credentials()
    out: dict[str, str] = {}
    region = session.region_name or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    out["AWS_REGION"] = region
    if creds is None:  # else each library's own lookup fails later with its own words (a 403 from 169.254.169.254)
        raise AuditlakeError("no AWS credentials for the S3 lake: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                             "or AWS_PROFILE, or run with an instance or task role")
    frozen = creds.get_frozen_credentials()
    out["AWS_ACCESS_KEY_ID"] = frozen.access_key
    out["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
    if frozen.token:
        out["AWS_SESSION_TOKEN"] = frozen.token
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        out["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            out["AWS_ALLOW_HTTP"] = "true"
    return out


# What a local lake keeps in its folder; the rest of the folder is free for people's files.
AUDIT_DIR = "_audit"  # the lake's own audit events, written as landing files and ingested
HOLDS_DIR = "_holds"  # legal holds, each a record signed by the lake
LAKE_OWNED = ("tables", "_retention", "landing", AUDIT_DIR, HOLDS_DIR, "auditlake.json", "catalog.duckdb")


@dataclass
class Lake:
    """A lake root. `uri` is an absolute folder path or s3://bucket/prefix (no trailing /)."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, uri: str | None = None) -> "Lake":
        uri = uri or default_lake_uri()
        if uri.startswith("s3:") and not uri.startswith("s3://") or uri.rstrip("/") == "s3:":
            raise AuditlakeError(f"not an S3 lake URI: {uri} (use s3://bucket/prefix)")
        uri = uri.rstrip("/")
        if uri.startswith("s3://"):
            parsed = urlparse(uri)
            if not parsed.netloc:
                raise AuditlakeError(f"not an S3 lake URI (no bucket): {uri}")
            if "%" in uri:  # delta-rs decodes it, boto3 does not: the tables would go under another prefix
                raise AuditlakeError(f"an S3 lake prefix cannot hold '%': {uri} (choose a prefix without it)")
            opts = _s3_settings()
            # Delta's commit must be atomic on S3: S3 (and MinIO, R2, moto) support
            # conditional writes (If-None-Match), which delta-rs uses for put-if-absent.
            opts["conditional_put"] = "etag"
            return cls(uri=uri, storage_options=opts)
        if "://" in uri and not uri.startswith("file://"):
            raise AuditlakeError(f"unsupported lake URI scheme: {uri} (use a folder or s3://bucket/prefix)")
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise AuditlakeError(f"{path} is a file, not a lake folder")
        return cls(uri=str(path))

    # -- locations -------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def bucket(self) -> str:
        return urlparse(self.uri).netloc

    @property
    def prefix(self) -> str:
        return urlparse(self.uri).path.strip("/")

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/tables/{name}"

    def child(self, rel: str) -> str:
        """The URI of a path inside the lake; refuses anything that would leave it."""
        norm = posixpath.normpath("/" + rel.replace("\\", "/")).lstrip("/")
        if norm.startswith("..") or norm in ("", "."):
            raise AuditlakeError(f"path escapes the lake: {rel}")
        return f"{self.uri}/{norm}"

    def refuse_output_inside(self, path: str | os.PathLike, what: str, holds_pii: bool = False) -> None:
        """A command's output for people (a bundle, a proof, a key file, a catalog) never goes
        where the lake keeps its own data: a file there would be read as a table's data, a
        landing file, an audit event, a hold or the lake's identity, or overwrite them. One
        that `holds_pii` in plain text (a subject access folder, a privileged export) goes
        nowhere in the lake's folder: an erasure could not reach it there."""
        if self.is_s3:
            return
        root = Path(self.uri)
        # As the writer will take it: links followed, a literal "~" a folder of that name.
        target = Path(path).resolve()
        if holds_pii and (target == root.resolve() or root.resolve() in target.parents):
            raise AuditlakeError(f"{what} {path} is inside the lake's folder and holds personal data in plain text "
                                 "(an erasure could not reach it there); write it elsewhere")
        for owned in LAKE_OWNED:
            place = (root / owned).resolve()
            if target == place or place in target.parents:
                raise AuditlakeError(f"{what} {path} is inside the lake's own {owned}; write it elsewhere")

    # -- files -----------------------------------------------------------------------
    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the lake root path in it."""
        if not self.is_s3:
            return pafs.LocalFileSystem(), self.uri
        o = self.storage_options
        endpoint = o.get("AWS_ENDPOINT_URL")
        kwargs = dict(
            region=o.get("AWS_REGION"),
            access_key=o.get("AWS_ACCESS_KEY_ID"),
            secret_key=o.get("AWS_SECRET_ACCESS_KEY"),
            session_token=o.get("AWS_SESSION_TOKEN"),
        )
        if endpoint:
            p = urlparse(endpoint)
            kwargs.update(endpoint_override=p.netloc, scheme=p.scheme or "https")
        return pafs.S3FileSystem(**kwargs), f"{self.bucket}/{self.prefix}".rstrip("/")

    def fs_path(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """Filesystem and path for a URI inside this lake or a local path outside it."""
        if uri.startswith("s3://"):
            fs, _ = self.filesystem() if self.is_s3 else Lake.open(uri).filesystem()
            return fs, uri.removeprefix("s3://")
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())

    def read_bytes(self, rel: str) -> bytes | None:
        fs, root = self.filesystem()
        if not self.is_s3:  # a FIFO or a device planted under that name would block or never end
            try:
                st = os.stat(f"{root}/{rel}")
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise AuditlakeError(f"cannot read {self.uri}/{rel}: {exc}") from exc
            if not stat.S_ISREG(st.st_mode):
                raise AuditlakeError(f"cannot read {self.uri}/{rel}: not a regular file")
        try:
            with fs.open_input_stream(f"{root}/{rel}") as f:
                return f.read()
        except (FileNotFoundError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or "not found" in str(exc).lower() or "NoSuchKey" in str(exc):
                return None
            raise AuditlakeError(f"cannot read {self.uri}/{rel}: {exc}") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        fs, root = self.filesystem()
        path = f"{root}/{rel}"
        try:
            if self.is_s3:  # a PUT is whole or not at all (and S3 has no folders to make)
                with fs.open_output_stream(path) as f:
                    f.write(data)
                return
            # Locally through a temporary file: a reader or a crash never meets a half-written one.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise AuditlakeError(f"cannot write {self.uri}/{rel}: {exc}") from exc

    def read_json(self, rel: str) -> dict | None:
        raw = self.read_bytes(rel)
        try:
            return None if raw is None else json.loads(raw)
        except ValueError as exc:  # also not UTF-8
            raise AuditlakeError(f"{self.uri}/{rel} is not valid JSON: {exc}") from exc

    def write_json(self, rel: str, obj: dict) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True).encode())

    # -- Delta tables ----------------------------------------------------------------
    def delta(self, name: str):
        """The DeltaTable, or None if the table does not exist yet."""
        from deltalake.exceptions import DeltaError, TableNotFoundError

        from .s3 import error_line

        try:
            dt = _DeltaTable(self.table_uri(name), storage_options=self.storage_options or None)
            root = f"{self.bucket}/{self.prefix}".rstrip("/") if self.is_s3 else self.uri
            dt._lake, dt._base = self, f"{root}/tables/{name}"
            return dt
        except TableNotFoundError:
            return None
        except (OSError, DeltaError) as exc:  # DeltaError: a log entry it cannot read (see `auditlake verify`)
            raise AuditlakeError(f"cannot open table {name} in {self.uri}: {error_line(exc)}") from exc

    def latest(self, name: str):
        """The table at its latest version for reading, or None: a DeltaTable kept per thread
        and table and brought up to date on each call (reading only the new log entries),
        instead of opening it again (20-70 ms once the log is long; a proof needs three).
        Callers never move it to another version: `delta()` gives a table of one's own."""
        key = (self.table_uri(name), tuple(sorted((self.storage_options or {}).items())))
        cache = _LATEST.__dict__.setdefault("tables", {})
        identity = self._table_identity(name)
        dt, known = cache.get(key, (None, None))
        if dt is not None and known == identity:
            try:
                dt.update_incremental()
                return dt
            except Exception:  # noqa: BLE001 - e.g. the table was removed: open it afresh
                pass
        cache.pop(key, None)
        dt = self.delta(name)
        if dt is not None:
            cache[key] = (dt, identity)
        return dt

    def _table_identity(self, name: str) -> tuple | None:
        """What tells a table from one made again at its path since it was opened: its first
        commit file's inode and change time. A local folder can be removed and made again
        (a kept table would then read files that are gone); S3 objects are retention-locked,
        so there it is None (no request per call)."""
        if self.is_s3:
            return None
        try:
            st = os.stat(f"{self.table_uri(name)}/_delta_log/{0:020d}.json")
        except OSError:
            return None
        return st.st_ino, st.st_ctime_ns

    def dataset(self, name: str, schema: pa.Schema):
        """A pyarrow dataset over the table (empty with `schema` if it does not exist)."""
        import pyarrow.dataset as ds

        dt = self.delta(name)
        if dt is None:
            return ds.dataset(pa.table({f.name: pa.array([], f.type) for f in schema}))
        return dt.to_pyarrow_dataset()


def _delta_table_class():
    from deltalake import DeltaTable

    class LakeDeltaTable(DeltaTable):
        """A DeltaTable whose pyarrow datasets read through pyarrow's native filesystem (local
        or S3, same settings). deltalake's default is a Python-implemented filesystem, whose
        buffers arrow's background threads may still be releasing when the interpreter exits:
        that aborts the process ("terminate called without an active exception", exit 134)."""

        _lake: "Lake | None" = None
        _base: str = ""

        def to_pyarrow_dataset(self, *args, **kwargs):
            if self._lake is not None and len(args) < 2 and kwargs.get("filesystem") is None:
                fs, _ = self._lake.filesystem()
                kwargs["filesystem"] = pafs.SubTreeFileSystem(self._base, fs)
            return super().to_pyarrow_dataset(*args, **kwargs)

    return LakeDeltaTable


class _LazyDeltaTable:
    cls = None

    def __call__(self, *args, **kwargs):
        if _LazyDeltaTable.cls is None:
            _LazyDeltaTable.cls = _delta_table_class()
        return _LazyDeltaTable.cls(*args, **kwargs)


_DeltaTable = _LazyDeltaTable()
_LATEST = threading.local()  # Lake.latest's tables: deltalake's tables are not shared across threads
