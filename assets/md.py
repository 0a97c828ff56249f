"""Small Markdown helpers for materialisation metadata (the UI's "preview")."""
from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(v: object, width: int = 80) -> str:
    s = "" if v is None else str(v)
    s = s.replace("\n", " ").replace("|", "\\|")
    return s if len(s) <= width else s[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], limit: int = 20, width: int = 80) -> str:
    rows = list(rows)
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v, width) for v in r) + " |" for r in rows[:limit]]
    if len(rows) > limit:
        out.append(f"\n_… and {len(rows) - limit} more_")
    return "\n".join(out)


def short(h: str | None, n: int = 16) -> str:
    return (h or "")[:n] + ("…" if h and len(h) > n else "")
