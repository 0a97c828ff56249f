"""Documents a user hands to an offline check (a proof, a public key file, a bundle's
manifest): read whole, but at most a bounded size, so that /dev/zero given by mistake (or
by an attacker) is a one-line error, not an exhausted memory. A pipe (`/dev/stdin`,
`<(...)`) is read like a file; opening one without a writer does not wait for one."""
from __future__ import annotations

import fcntl
import hashlib
import os
import stat

from .errors import AuditlakeError

MAX_DOCUMENT_BYTES = 64 << 20


def read_document(path, what: str, limit: int | None = None) -> bytes:
    """The bytes of the file or pipe at `path` (AuditlakeError if it is another kind of
    file, or larger than `limit`, default MAX_DOCUMENT_BYTES)."""
    limit = MAX_DOCUMENT_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, writer or not
    except OSError as exc:
        raise AuditlakeError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode)):
            raise AuditlakeError(f"{what} {path} is not a file")
        if info.st_size > limit:
            raise AuditlakeError(f"{what} {path} is larger than {limit >> 20} MiB")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)  # then read as usual
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # a device or pipe without end, or a file that grew while read
            raise AuditlakeError(f"{what} {path} is larger than {limit >> 20} MiB")
        return b"".join(chunks)
    except OSError as exc:
        raise AuditlakeError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def file_sha256(path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
