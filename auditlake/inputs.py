"""Documents a user hands to an offline check (a proof, a public key file, a bundle's
manifest): read whole, but only from a regular file of a bounded size, so that /dev/zero
or a FIFO given by mistake (or by an attacker) is a one-line error, not a hang or an
exhausted memory."""
from __future__ import annotations

import os
import stat

from .errors import AuditlakeError

MAX_DOCUMENT_BYTES = 64 << 20


def read_document(path, what: str, limit: int | None = None) -> bytes:
    """The bytes of the regular file at `path` (AuditlakeError if it is none or is larger
    than `limit`, default MAX_DOCUMENT_BYTES). Opened without blocking: a FIFO is refused,
    not waited on."""
    limit = MAX_DOCUMENT_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise AuditlakeError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AuditlakeError(f"{what} {path} is not a regular file")
        if info.st_size > limit:
            raise AuditlakeError(f"{what} {path} is larger than {limit >> 20} MiB")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:  # grew while read
            raise AuditlakeError(f"{what} {path} is larger than {limit >> 20} MiB")
        return data
    except OSError as exc:
        raise AuditlakeError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
