"""S3 specifics through boto3, configured from the same settings as the Delta tables
(`Lake.storage_options`, built from the standard AWS environment and profile).

What lives here: the bucket's setup (versioning, Object Lock, lifecycle), COMPLIANCE-mode
retention and legal holds on the objects the lake commits, the RET-WORM check of a lake on
S3, the version history that `repair` restores from, and one-line error messages.
Which objects are committed, and until when they must be retained, is decided in
`retention.py` for local and S3 lakes alike.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone

from ..errors import AuditlakeError
from .store import Lake

COMPLIANCE = "COMPLIANCE"
WORKERS = 16
_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


# ----------------------------------------------------------------------------- client and errors
def client(lake: Lake):
    """A boto3 S3 client for the lake (cached per settings; boto3 clients are thread-safe)."""
    import boto3
    from botocore.config import Config

    o = lake.storage_options
    ident = tuple(o.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    with _clients_lock:
        c = _clients.get(ident)
        if c is None:
            # A session of its own: boto3's default session is neither thread-safe nor aware
            # of environment changes after it was first used.
            session = boto3.session.Session(profile_name=os.environ.get("AWS_PROFILE") or None)
            c = session.client(
                "s3",
                endpoint_url=o.get("AWS_ENDPOINT_URL"),
                region_name=o.get("AWS_REGION"),
                aws_access_key_id=o.get("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=o.get("AWS_SECRET_ACCESS_KEY"),
                aws_session_token=o.get("AWS_SESSION_TOKEN"),
                # An endpoint that accepts and never answers fails in about a minute, not six:
                # the lake's own requests are small (retention, versions, hints).
                config=Config(
                    retries={"max_attempts": 4, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=15,
                    max_pool_connections=WORKERS * 2,
                ),
            )
            _clients[ident] = c
    return c


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TREE = re.compile(r"\s*↳\s*")
_FRAME = re.compile(r"^\s*\d+: <unknown>\s*$", re.M)  # delta-rs's backtrace without symbols


def error_line(exc: BaseException | str) -> str:
    """Any error (boto3, pyarrow, delta-rs's multi-line coloured chains) as one clear line."""
    text = _ANSI.sub("", str(exc))
    text = _FRAME.sub("", text)
    text = _TREE.sub(": ", text)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        text = exc.__class__.__name__ if isinstance(exc, BaseException) else "error"
    # The root cause of a network failure is what a user needs first.
    low = text.lower()
    if any(s in low for s in ("connection refused", "could not connect", "client error (connect)",
                              "connect timeout", "failed to connect", "could not connect to the endpoint",
                              "error sending request", "network_connection", "connection reset",
                              "connection aborted", "connection was closed")) and "endpoint unreachable" not in low:
        where = re.search(r"(https?://[^/\s\"'()]+)", text)
        return f"S3 endpoint unreachable{f' ({where.group(1)})' if where else ''}: {text[:300]}"
    return text[:500]


def s3_error(exc: Exception, what: str) -> AuditlakeError:
    """A botocore error as an AuditlakeError with one clear line."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        msg = err.get("Message") or ""
        return AuditlakeError(f"S3 error {what}: {code}{': ' + msg if msg else ''}")
    return AuditlakeError(f"S3 error {what}: {error_line(exc)}")


def _code(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "")
    return ""


def call(what: str, fn: Callable, *args, **kwargs):
    """Run a boto3 call; botocore errors become one-line AuditlakeErrors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, what) from exc


def key(lake: Lake, rel: str) -> str:
    return f"{lake.prefix}/{rel}".lstrip("/")


def rel_of(lake: Lake, k: str) -> str:
    p = lake.prefix
    return k[len(p) + 1:] if p else k


def put_if_absent(lake: Lake, rel: str, body: bytes) -> bool:
    """Create the object only if no object has that key. True if this call created it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client(lake).put_object(Bucket=lake.bucket, Key=key(lake, rel), Body=body, IfNoneMatch="*")
        return True
    except ClientError as exc:
        if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
            return False
        raise s3_error(exc, f"writing s3://{lake.bucket}/{key(lake, rel)}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"writing s3://{lake.bucket}/{key(lake, rel)}") from exc


def _parallel(fn: Callable, items: Iterable) -> list:
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        return list(pool.map(fn, items))


# ----------------------------------------------------------------------------- bucket setup
@dataclass
class BucketState:
    created: bool = False
    versioning: str = ""
    object_lock: str = ""
    lifecycle_rules: list[dict] = field(default_factory=list)


def ensure_bucket(lake: Lake) -> BucketState:
    """Create the bucket with versioning and Object Lock, or check (and where S3 allows it,
    enable) both on an existing bucket."""
    from botocore.exceptions import ClientError

    c = client(lake)
    b = lake.bucket
    state = BucketState()
    try:
        c.head_bucket(Bucket=b)
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise s3_error(exc, f"checking bucket {b}") from exc
        kwargs = {"Bucket": b, "ObjectLockEnabledForBucket": True}
        region = lake.storage_options.get("AWS_REGION") or "us-east-1"
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        call(f"creating bucket {b}", c.create_bucket, **kwargs)
        state.created = True
    except Exception as exc:  # noqa: BLE001 - network errors
        raise s3_error(exc, f"checking bucket {b}") from exc
    versioning = call(f"reading versioning of {b}", c.get_bucket_versioning, Bucket=b).get("Status", "")
    if versioning != "Enabled":
        call(f"enabling versioning on {b}", c.put_bucket_versioning, Bucket=b,
             VersioningConfiguration={"Status": "Enabled"})
        versioning = "Enabled"
    state.versioning = versioning
    state.object_lock = object_lock_status(lake)
    if state.object_lock != "Enabled":
        # S3 lets a versioned bucket turn Object Lock on (it can never be turned off).
        call(f"enabling Object Lock on {b}", c.put_object_lock_configuration, Bucket=b,
             ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
        state.object_lock = object_lock_status(lake)
        if state.object_lock != "Enabled":
            raise AuditlakeError(f"bucket {b} does not support Object Lock; create a new bucket with Object Lock enabled")
    return state


def object_lock_status(lake: Lake) -> str:
    from botocore.exceptions import ClientError

    try:
        conf = client(lake).get_object_lock_configuration(Bucket=lake.bucket)
    except ClientError as exc:
        if _code(exc) in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
            return ""
        if _code(exc) == "NoSuchBucket":
            raise AuditlakeError(f"bucket {lake.bucket} does not exist; create it with `auditlake init --lake {lake.uri}`") from exc
        raise s3_error(exc, f"reading the Object Lock configuration of {lake.bucket}") from exc
    except Exception as exc:  # noqa: BLE001
        raise s3_error(exc, f"reading the Object Lock configuration of {lake.bucket}") from exc
    return conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled", "")


def versioning_status(lake: Lake) -> str:
    return call(f"reading versioning of {lake.bucket}", client(lake).get_bucket_versioning, Bucket=lake.bucket).get("Status", "")


LIFECYCLE_PREFIX = "auditlake-"


def lifecycle_rules(lake: Lake, cold_after_days: int, archive_after_days: int, retention_days: int) -> list[dict]:
    """The lake's lifecycle rules: sealed objects move to colder storage classes that stay
    readable without a restore (so `verify` keeps working), incomplete uploads of crashed
    writers are aborted, and nothing is expired while it is retained: there is no expiration
    of current versions at all (that would hide sealed objects behind delete markers), and
    noncurrent versions (tampering attempts, superseded hints) expire only after the
    retention period (Object Lock refuses earlier deletion anyway)."""
    base = f"{lake.prefix}/".lstrip("/")
    cold = max(30, cold_after_days)  # S3's minimum age for STANDARD_IA
    archive = max(cold + 30, archive_after_days)
    return [
        {
            "ID": f"{LIFECYCLE_PREFIX}cold-storage",
            "Status": "Enabled",
            "Filter": {"Prefix": f"{base}tables/"},
            "Transitions": [
                {"Days": cold, "StorageClass": "STANDARD_IA"},
                {"Days": archive, "StorageClass": "GLACIER_IR"},
            ],
            "NoncurrentVersionTransitions": [
                {"NoncurrentDays": cold, "StorageClass": "STANDARD_IA"},
                {"NoncurrentDays": archive, "StorageClass": "GLACIER_IR"},
            ],
        },
        {
            "ID": f"{LIFECYCLE_PREFIX}noncurrent-after-retention",
            "Status": "Enabled",
            "Filter": {"Prefix": base},
            "NoncurrentVersionExpiration": {"NoncurrentDays": retention_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
    ]


def put_lifecycle(lake: Lake, rules: list[dict]) -> list[dict]:
    """Install the lake's rules, keeping rules of others (by ID) in the bucket."""
    from botocore.exceptions import ClientError

    c = client(lake)
    try:
        existing = c.get_bucket_lifecycle_configuration(Bucket=lake.bucket).get("Rules", [])
    except ClientError as exc:
        if _code(exc) != "NoSuchLifecycleConfiguration":
            raise s3_error(exc, f"reading the lifecycle of {lake.bucket}") from exc
        existing = []
    ours = {r["ID"] for r in rules}
    keep = [r for r in existing if r.get("ID") not in ours]
    call(f"setting the lifecycle of {lake.bucket}", c.put_bucket_lifecycle_configuration, Bucket=lake.bucket,
         LifecycleConfiguration={"Rules": keep + rules})
    return keep + rules


def get_lifecycle(lake: Lake) -> list[dict]:
    from botocore.exceptions import ClientError

    try:
        return client(lake).get_bucket_lifecycle_configuration(Bucket=lake.bucket).get("Rules", [])
    except ClientError as exc:
        if _code(exc) == "NoSuchLifecycleConfiguration":
            return []
        raise s3_error(exc, f"reading the lifecycle of {lake.bucket}") from exc


def lifecycle_problems(lake: Lake, years: int) -> list[str]:
    """The bucket's enabled lifecycle rules over the lake's objects that would hide or lose
    retained ones: expiring current versions (a delete marker on every sealed object),
    expiring noncurrent ones before the retention period, or moving them where a read needs
    a restore (verify could not read them)."""
    base = f"{lake.prefix}/".lstrip("/")
    out = []
    for rule in get_lifecycle(lake):
        if rule.get("Status") != "Enabled":
            continue
        filt = rule.get("Filter") or {}
        prefix = (filt.get("And") or {}).get("Prefix", filt.get("Prefix", rule.get("Prefix", ""))) or ""
        if not (base.startswith(prefix) or prefix.startswith(base)):
            continue
        name = f"lifecycle rule {str(rule.get('ID') or '(no id)')[:60]!r} (not the lake's: remove it)"
        expiration = rule.get("Expiration") or {}
        if "Days" in expiration or "Date" in expiration:
            out.append(f"{name} expires current versions: every retained object would be hidden behind a delete marker")
        days = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
        if isinstance(days, int) and days < years * 365:
            out.append(f"{name} expires noncurrent versions after {days} days, within the {years}-year retention")
        cold = [t.get("StorageClass") for t in rule.get("Transitions", []) + rule.get("NoncurrentVersionTransitions", [])]
        if slow := sorted({c for c in cold if c in ("GLACIER", "DEEP_ARCHIVE")}):
            out.append(f"{name} moves objects to {', '.join(slow)}, which needs a restore before verify can read them")
    return out


# ----------------------------------------------------------------------------- versions
@dataclass
class Version:
    version_id: str
    last_modified: datetime
    etag: str = ""
    size: int = 0
    delete_marker: bool = False
    is_latest: bool = False


@dataclass
class ObjectHistory:
    key: str
    versions: list[Version] = field(default_factory=list)  # real versions, oldest first
    markers: list[Version] = field(default_factory=list)  # delete markers

    @property
    def original(self) -> Version | None:
        """The first version ever written: with put-if-absent commits and write-once data
        files, the one the lake committed (and sealed)."""
        return self.versions[0] if self.versions else None

    @property
    def latest(self) -> Version | None:
        return next((v for v in self.versions + self.markers if v.is_latest), None)

    @property
    def intact(self) -> bool:
        return len(self.versions) == 1 and not self.markers

    def newer_than_original(self) -> list[Version]:
        """Everything written over or on top of the original: later versions and markers."""
        return self.versions[1:] + self.markers


def histories(lake: Lake, rel_prefix: str) -> dict[str, ObjectHistory]:
    """Every key under the prefix with all its versions and delete markers. S3 lists the
    versions of a key newest first (LastModified only has one-second resolution, so the
    listing order, not the time, tells which came first)."""
    from botocore.exceptions import BotoCoreError, ClientError

    c = client(lake)
    out: dict[str, ObjectHistory] = {}
    paginator = c.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=lake.bucket, Prefix=key(lake, rel_prefix)):
            for v in page.get("Versions", []):
                out.setdefault(v["Key"], ObjectHistory(v["Key"])).versions.append(
                    Version(v["VersionId"], v["LastModified"], v.get("ETag", ""), v.get("Size", 0), False, v.get("IsLatest", False)))
            for m in page.get("DeleteMarkers", []):
                out.setdefault(m["Key"], ObjectHistory(m["Key"])).markers.append(
                    Version(m["VersionId"], m["LastModified"], delete_marker=True, is_latest=m.get("IsLatest", False)))
    except (BotoCoreError, ClientError) as exc:
        raise s3_error(exc, f"listing versions under s3://{lake.bucket}/{key(lake, rel_prefix)}") from exc
    for h in out.values():
        h.versions.reverse()
        h.markers.reverse()
    return out


def history(lake: Lake, rel: str) -> ObjectHistory:
    k = key(lake, rel)
    return histories(lake, rel).get(k) or ObjectHistory(k)


@dataclass
class LockInfo:
    mode: str | None
    until: datetime | None
    legal_hold: bool


def lock_info(lake: Lake, rel: str, version_id: str | None = None) -> LockInfo:
    """Retention and legal hold of one object version (HEAD returns them to a caller allowed
    to read them; moto and S3 alike)."""
    kwargs = {"Bucket": lake.bucket, "Key": key(lake, rel)}
    if version_id:
        kwargs["VersionId"] = version_id
    h = call(f"reading s3://{lake.bucket}/{key(lake, rel)}", client(lake).head_object, **kwargs)
    until = h.get("ObjectLockRetainUntilDate")
    if until is not None:
        until = until.astimezone(timezone.utc)
    return LockInfo(h.get("ObjectLockMode"), until, h.get("ObjectLockLegalHoldStatus") == "ON")


# ----------------------------------------------------------------------------- retention
def until_datetime(d: date) -> datetime:
    return datetime.combine(d, time(0, 0), tzinfo=timezone.utc)


def lock_object(lake: Lake, rel: str, until: date | None = None, *, years: int | None = None,
                dates: tuple[date, ...] = (), today: date | None = None, legal_hold: bool = False) -> tuple[str | None, bool]:
    """COMPLIANCE retention on the object's original version, until `until` or else
    `retention.required_until` of (the later of today and the day it was written, `dates`),
    plus a legal hold if asked. Returns (version id locked, whether the key has more than
    one version or a delete marker)."""
    h = history(lake, rel)
    orig = h.original
    if orig is None:
        return None, False
    if until is None:
        from .retention import MIN_YEARS, required_until

        created = max(today or datetime.now(timezone.utc).date(), orig.last_modified.astimezone(timezone.utc).date())
        until = required_until(created, dates, years or MIN_YEARS)
    _retain(lake, rel, orig.version_id, until)
    if legal_hold:
        set_legal_hold(lake, rel, True, orig.version_id)
    return orig.version_id, not h.intact


def lock_newest(lake: Lake, rel: str, until: date) -> None:
    """COMPLIANCE retention on the object's newest version (one the lake rewrites, whose
    earlier versions must stay: auditlake.json)."""
    versions = history(lake, rel).versions
    if versions:
        _retain(lake, rel, versions[-1].version_id, until)


def _retain(lake: Lake, rel: str, version_id: str, until: date) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    c, k = client(lake), key(lake, rel)
    want = until_datetime(until)
    retention = {"Mode": COMPLIANCE, "RetainUntilDate": want}
    try:
        c.put_object_retention(Bucket=lake.bucket, Key=k, VersionId=version_id, Retention=retention)
    except ClientError as exc:
        # COMPLIANCE retention can only be extended: an existing later date is fine. A
        # GOVERNANCE lock (someone's, weaker) is replaced with the bypass permission.
        info = lock_info(lake, rel, version_id)
        if info.mode == "GOVERNANCE":
            call(f"locking s3://{lake.bucket}/{k}", c.put_object_retention, Bucket=lake.bucket, Key=k,
                 VersionId=version_id, Retention=retention, BypassGovernanceRetention=True)
        elif not (info.mode == COMPLIANCE and info.until is not None and info.until >= want):
            raise s3_error(exc, f"locking s3://{lake.bucket}/{k}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"locking s3://{lake.bucket}/{k}") from exc


def set_legal_hold(lake: Lake, rel: str, on: bool, version_id: str | None = None) -> None:
    if version_id is None:
        orig = history(lake, rel).original
        if orig is None:
            return
        version_id = orig.version_id
    call(f"setting the legal hold of s3://{lake.bucket}/{key(lake, rel)}", client(lake).put_object_legal_hold,
         Bucket=lake.bucket, Key=key(lake, rel), VersionId=version_id, LegalHold={"Status": "ON" if on else "OFF"})


def set_legal_holds(lake: Lake, rels: Iterable[str], on: bool) -> int:
    rels = list(rels)
    _parallel(lambda r: set_legal_hold(lake, r, on), rels)
    return len(rels)


# Kept for retention.py's dispatch: the S3 halves of lock_new and check.
def lock_new_objects(lake: Lake, keys) -> int:
    from .retention import lock_new

    return lock_new(lake, keys)


def check_object_lock(lake: Lake, keys) -> list[dict]:
    from .retention import check

    return check(lake, keys)


def read_version(lake: Lake, rel: str, version_id: str) -> bytes:
    """The body of one version of an object."""
    r = call(f"reading s3://{lake.bucket}/{key(lake, rel)}", client(lake).get_object,
             Bucket=lake.bucket, Key=key(lake, rel), VersionId=version_id)
    return r["Body"].read()


# ----------------------------------------------------------------------------- repair
def delete_version(lake: Lake, k: str, version_id: str) -> str | None:
    """Delete one version (or delete marker). None if done, else the S3 error code."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client(lake).delete_object(Bucket=lake.bucket, Key=k, VersionId=version_id)
        return None
    except ClientError as exc:
        return _code(exc) or "error"
    except BotoCoreError as exc:
        raise s3_error(exc, f"deleting a version of s3://{lake.bucket}/{k}") from exc


def copy_version(lake: Lake, k: str, version_id: str) -> str:
    """Make a copy of an old version the latest version of the key; the new version id."""
    r = call(f"restoring s3://{lake.bucket}/{k}", client(lake).copy_object, Bucket=lake.bucket, Key=k,
             CopySource={"Bucket": lake.bucket, "Key": k, "VersionId": version_id})
    return r.get("VersionId", "")


def delete_current(lake: Lake, rel: str) -> None:
    """A plain delete (on a versioned bucket: a delete marker; the data stays as a noncurrent
    version that the lifecycle expires after the retention period)."""
    call(f"deleting s3://{lake.bucket}/{key(lake, rel)}", client(lake).delete_object, Bucket=lake.bucket, Key=key(lake, rel))
