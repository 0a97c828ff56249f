"""The lake's identity file `auditlake.json` (log id, public keys) and its keystore."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from datetime import datetime, timezone

from ..errors import AuditlakeError
from ..keys import KeyStore, valid_log_id
from .store import Lake

META = "auditlake.json"
FORMAT_VERSION = 1


def _create_exclusive(lake: Lake, body: bytes) -> None:
    """Write auditlake.json only if it does not exist (two first writers agree on one log id)."""
    if lake.is_s3:
        from .s3 import put_if_absent

        put_if_absent(lake, META, body)
        return
    os.makedirs(lake.uri, exist_ok=True)
    # Written whole beside it, then linked into place (fails if one is there): a concurrent
    # first writer never reads a half-written identity.
    tmp = os.path.join(lake.uri, f".{META}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, os.path.join(lake.uri, META))
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def has_tables(lake: Lake) -> bool:
    """Whether the lake folder holds tables (anything under tables/)."""
    import pyarrow.fs as pafs

    fs, root = lake.filesystem()
    try:
        return bool(fs.get_file_info(pafs.FileSelector(f"{root}/tables", allow_not_found=True)))
    except (OSError, FileNotFoundError):
        return False


class KeysNotPublished(AuditlakeError):
    """The lake's keystore is here, but auditlake.json publishes none of its keys."""

    def __init__(self, log_id: str, message: str):
        super().__init__(message)
        self.log_id = log_id


def write_meta(lake: Lake, meta: dict) -> None:
    """Rewrite auditlake.json (a policy lengthened, keys published). On S3 each version is
    kept under COMPLIANCE retention: its history (the longest policy the lake promised, the
    keys it published) is evidence verify reads, and must not be deletable."""
    lake.write_json(META, meta)
    lock_meta(lake)


def lock_meta(lake: Lake) -> None:
    if not lake.is_s3:
        return
    from datetime import timedelta

    from . import retention, s3

    years = retention.policy(lake, refresh=True)["years"]
    s3.lock_newest(lake, META, retention.add_years(datetime.now(timezone.utc).date() + timedelta(days=1), years))


def meta_or_none(lake: Lake) -> dict | None:
    """auditlake.json as a map, or None when it is gone or no JSON object (for checks that
    go on and report it: verify's identity check says which)."""
    try:
        meta = lake.read_json(META)
    except AuditlakeError:
        return None
    return meta if isinstance(meta, dict) else None


def read_meta(lake: Lake, create: bool = False) -> dict:
    meta = lake.read_json(META)
    if meta is None:
        if has_tables(lake):
            # A new identity (log id, keys) over the old tables would start a second log.
            raise AuditlakeError(f"the lake at {lake.uri} has tables but no {META} (its identity): "
                                 "restore that file from a backup")
        if not create:
            if lake.is_s3:
                from .s3 import object_lock_status

                object_lock_status(lake)  # a missing bucket is said so, with how to create it
            raise AuditlakeError(f"no lake at {lake.uri} (no {META}); run `auditlake init` or `auditlake ingest`")
        body = {
            "log_id": "log-" + uuid.uuid4().hex,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "format_version": FORMAT_VERSION,
        }
        _create_exclusive(lake, json.dumps(body, indent=2, sort_keys=True).encode())
        lock_meta(lake)
        meta = lake.read_json(META)
    if not isinstance(meta, dict) or not valid_log_id(meta.get("log_id")):
        raise AuditlakeError(f"{META} of the lake at {lake.uri} names no valid log id: restore that file from a backup")
    return meta


def open_lake_keys(lake: Lake, create: bool = False) -> KeyStore:
    """The lake's keystore in AUDITLAKE_HOME. Only a writer that may start the lake
    (`create`: init, ingest) makes one, and only while the lake has no keys anywhere: no
    tables and no published keys (`init` publishes them). Keys made up by a reader, or for
    a lake whose keys live on another host, could neither verify nor extend it (every
    signature and chain link would read as forged, or the lake would fork)."""
    from ..keys import auditlake_home, keystore_exists

    home = auditlake_home()
    if not lake.is_s3 and home.resolve().is_relative_to(Path(lake.uri).resolve()):
        # Keys beside what they seal: whoever can change the lake could re-key it, and the
        # trust store (here too) could be rolled back with it.
        raise AuditlakeError(f"AUDITLAKE_HOME {home} is inside the lake {lake.uri}: the keystore and the trust store "
                             "must be kept outside the lake")
    meta = read_meta(lake, create=create)
    published = set(meta.get("public_keys") or {})
    if not keystore_exists(meta["log_id"]) and (not create or published or has_tables(lake)):
        raise AuditlakeError(f"no keystore of the lake {lake.uri} ({meta['log_id']}) in {auditlake_home()}: point "
                             "AUDITLAKE_HOME at the keystore of the host that created the lake")
    from ..kms import select_keystore  # KMS envelope keys when AUDITLAKE_KMS_KEY_ID is set

    keys = select_keystore(meta["log_id"])
    if published and not published & set(keys.public_keys()):
        raise KeysNotPublished(meta["log_id"], f"the keystore in {auditlake_home()} holds none of the keys the lake "
                               f"{lake.uri} published in auditlake.json: point AUDITLAKE_HOME at the lake's keystore")
    return keys
