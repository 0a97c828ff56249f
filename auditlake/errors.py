"""Errors a user sees as one line (exit code 2), and findings of a check (exit code 1)."""


class AuditlakeError(Exception):
    """A usage or I/O problem: printed as one line, exit code 2."""


class ConflictError(AuditlakeError):
    """Another writer committed first; the caller re-plans from the new state."""


class NotIntactError(AuditlakeError):
    """A step that needs an intact lake found it is not: one line, exit code 1 (a check found
    a problem), not a usage error."""
