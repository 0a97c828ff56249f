"""Shared plumbing of the explorer: the lake, its read-only DuckDB connection, cached
parameterised queries keyed on the Delta table versions, sign-in and roles.

Rule of the house: every value that comes from the lake or a user is shown through
elements that render text inertly (st.text, st.code, st.json, st.dataframe, st.metric with
numbers); st.markdown only ever gets constant text; no unsafe_allow_html anywhere; every
query takes user input as `?` parameters, never as SQL text.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone

import streamlit as st

from auditlake.catalog import (
    ROLES,
    Explorer,
    authenticate,
    load_users,
    oidc_role,
    users_path,
)
from auditlake.console import Console
from auditlake.lake.store import Lake
from auditlake.masking import escape_controls, mask_text

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# page -> roles that see it
PAGES: dict[str, tuple[str, ...]] = {
    "Overview": ROLES,
    "Search": ROLES,
    "Event": ROLES,
    "Compliance": ROLES,
    "Exports": ROLES,
    "SQL": ROLES,
    "Privacy": ("privacy_officer",),
    "Admin": ("admin",),
}
ROLE_LABELS = {"auditor": "Auditor (PII masked)", "privacy_officer": "Privacy officer", "admin": "Admin"}


def allowed(role: str, page: str) -> bool:
    return role in PAGES.get(page, ())


def lake_uri() -> str:
    return os.environ.get("AUDITLAKE_LAKE") or "./lake"


@st.cache_resource(show_spinner=False)
def _explorer(uri: str) -> Explorer:
    return Explorer(Lake.open(uri))


def explorer() -> Explorer:
    return _explorer(Lake.open(lake_uri()).uri)


@st.cache_resource(show_spinner=False)
def _console(uri: str) -> Console:
    return Console(Lake.open(uri))


def console() -> Console:
    """The SQL console's worker processes (auditlake.console)."""
    return _console(Lake.open(lake_uri()).uri)


def versions() -> tuple:
    """The tables' Delta versions now; part of every cached query's key, so a new batch
    (a new version) is seen at once and an unchanged lake is never re-queried."""
    v = explorer().versions()
    return tuple(sorted(v.items()))


@st.cache_data(show_spinner=False, max_entries=256, ttl=3600)
def _cached_query(uri: str, vers: tuple, sql: str, params: tuple):
    return explorer().query(sql, params).to_pandas()


def query(sql: str, params: tuple | list = (), vers: tuple | None = None):
    """A parameterised query through the cache (pandas DataFrame)."""
    return _cached_query(explorer().lake.uri, vers if vers is not None else versions(), sql, tuple(params))


def uncached(sql: str, params: tuple | list = ()):
    return explorer().query(sql, params).to_pandas()


# ----------------------------------------------------------------------------- auth

def users() -> dict:
    return load_users(users_path())


def current_user() -> dict | None:
    """The signed-in user with the role the users file gives them now: it is read on every
    run, so a demoted user loses pages at once and a removed one is signed out."""
    auth = st.session_state.get("auth")
    if auth is None:
        return None
    known = users()
    if auth.get("via") == "oidc":
        role = oidc_role(known, auth["user"])
    else:
        role = (known["users"].get(auth["user"]) or {}).get("role")
    if role is None:
        logout()
        return None
    if role != auth["role"]:
        auth = {**auth, "role": role}
        st.session_state["auth"] = auth
    return auth


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file
        return False


def login_screen() -> None:
    st.title("auditlake explorer")
    st.caption("Sign in to explore the audit lake.")
    if _oidc_configured():
        try:
            if getattr(st.user, "is_logged_in", False):
                email = st.user.get("email")
                role = oidc_role(users(), email)
                if role:
                    st.session_state["auth"] = {"user": str(email), "role": role, "via": "oidc"}
                    st.rerun()
                st.error("Your single sign-on account has no explorer role. Ask an admin.")
                if st.button("Log out of single sign-on", key="sso_logout"):
                    st.logout()
                return
        except Exception:  # noqa: BLE001 - st.user unavailable: offer the sign-in button
            pass
        if st.button("Log in with single sign-on", key="sso"):
            st.login()
    with st.form("login"):
        name = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        role = sign_in(name or "", password or "")
        if role:
            st.session_state["auth"] = {"user": name, "role": role, "via": "password"}
            st.session_state.pop("login_password", None)
            st.rerun()
        else:
            st.error("Unknown user or wrong password (after repeated failures, wait a few seconds between tries).")
    if not users()["users"] and not _oidc_configured():
        st.info("No users are configured. Add one with: python -m auditlake.catalog add-user NAME admin")


MAX_NAME_CHARS, MAX_PASSWORD_CHARS = 256, 1024
MAX_TRACKED_NAMES = 10_000  # the oldest are forgotten past this: memory stays bounded
FREE_ATTEMPTS = 3  # per user name before each next one must wait 1, 2, 4, then 8 s


@dataclass
class _NameSlot:
    failures: int = 0
    not_before: float = 0.0  # time.monotonic() before which an attempt is refused unchecked


@st.cache_resource(show_spinner=False)
def _sign_in_guard() -> tuple[threading.Lock, OrderedDict]:
    """Sign-in attempts by user name (its SHA-256: a name's size costs nothing), shared by
    every session of this server process, newest last."""
    return threading.Lock(), OrderedDict()


def sign_in(name: str, password: str) -> str | None:
    """The role for a user name and password, or None. Attempts count per user name across
    sessions, and count as they start (an attempt in flight is a guess): past FREE_ATTEMPTS
    failures, an attempt before the name's wait is over is refused without a look at the
    password. So a guesser with many sessions guesses no faster than with one, and nobody
    waits in a queue (a sleep under a lock let a guesser hold the real user back)."""
    who = name.strip().lower()
    if not who or len(who) > MAX_NAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
        return None
    guard, names = _sign_in_guard()
    key = hashlib.sha256(who.encode()).digest()
    with guard:
        slot = names.pop(key, None) or _NameSlot()
        names[key] = slot
        while len(names) > MAX_TRACKED_NAMES:
            names.popitem(last=False)
        now = time.monotonic()
        if now < slot.not_before:
            return None
        slot.failures += 1
        if slot.failures > FREE_ATTEMPTS:
            slot.not_before = now + min(2 ** (slot.failures - FREE_ATTEMPTS - 1), 8)
    role = authenticate(users(), name, password)
    if role:
        with guard:
            slot.failures, slot.not_before = 0, 0.0
    return role


def logout() -> None:
    """Forget the session; a single sign-on session is also ended at the provider (its
    identity cookie would sign the next person at this browser straight back in)."""
    via = (st.session_state.get("auth") or {}).get("via")
    for k in list(st.session_state.keys()):
        del st.session_state[k]
    if via == "oidc":
        st.logout()


# ----------------------------------------------------------------------------- helpers

def goto(page: str, **state) -> None:
    """A button callback: switch page (and set state, e.g. the event to open)."""
    for k, v in state.items():
        st.session_state[k] = v
    st.session_state["page"] = page


def time_range(key: str, default_days: int = 7) -> tuple[datetime, datetime] | None:
    """A required UTC date range [from 00:00, to+1 day 00:00). Defaults to the last
    `default_days` days of data."""
    first, last = data_bounds()
    last = last or date.today()
    start = last - timedelta(days=default_days - 1)
    # The pickers span the data (Streamlit's own bounds are ten years either side of the value).
    lo, hi = min(first or start, start, date(1970, 1, 1)), date(min(max(last, date.today()).year + 10, 9999), 12, 31)
    c1, c2 = st.columns(2)
    d_from = c1.date_input("From (UTC date)", value=start, min_value=lo, max_value=hi, key=f"{key}_from")
    d_to = c2.date_input("To (UTC date, inclusive)", value=last, min_value=lo, max_value=hi, key=f"{key}_to")
    if not isinstance(d_from, date) or not isinstance(d_to, date):
        st.warning("A time range is required.")
        return None
    if d_from > d_to:
        st.warning("'From' must not be after 'To'.")
        return None
    start = datetime.combine(d_from, dtime(0), tzinfo=timezone.utc)
    # The calendar's last day has no next one: its end is its last instant (inclusive of all but it).
    end = (datetime.combine(d_to + timedelta(days=1), dtime(0), tzinfo=timezone.utc) if d_to < date.max
           else datetime.max.replace(tzinfo=timezone.utc))
    return start, end


def data_bounds() -> tuple[date | None, date | None]:
    """First and last event_date in the ledger (partition values: cheap)."""
    df = query("SELECT min(event_date) AS lo, max(event_date) AS hi FROM events")
    lo, hi = df.iloc[0]["lo"], df.iloc[0]["hi"]
    parse = lambda s: date.fromisoformat(s) if isinstance(s, str) else None  # noqa: E731
    return parse(lo), parse(hi)


def day_bounds(start: datetime, end: datetime) -> tuple[str, str]:
    """event_date partition bounds covering [start, end)."""
    return start.strftime("%Y-%m-%d"), (end - timedelta(microseconds=1)).strftime("%Y-%m-%d")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe_csv(df) -> str:
    """CSV for a spreadsheet: a text cell that starts like a formula gets a leading
    apostrophe, so producer-written text never runs as one when the file is opened."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_datetime64_any_dtype(out[c])):
            out[c] = out[c].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    return out.to_csv(index=False)


def shown(text: str, masked: bool = True) -> str:
    """Text from the lake as the explorer shows it: PII-shaped parts masked (unless an
    audited reveal asks), invisible and control characters as escapes, and a backslash
    doubled, so that a typed "\\u202e" never reads as an escaped one (nor do two keys merge)."""
    return escape_controls((mask_text(text) if masked else text).replace("\\", "\\\\"))


def shown_json(value):
    """A parsed JSON value (already masked) as the explorer shows it: shown() on every
    string, keys included."""
    if isinstance(value, str):
        return shown(value, masked=False)
    if isinstance(value, dict):
        return {shown(str(k), masked=False): shown_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown_json(v) for v in value]
    return value


def show_failure(exc: Exception) -> None:
    """A page that cannot be drawn: one line saying why (no traceback, paths inside the
    lake relative to it) and what to do."""
    why = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        why = why.replace(Lake.open(lake_uri()).uri.rstrip("/") + "/", "")
    except Exception:  # noqa: BLE001 - the line as it is
        pass
    st.error("This page cannot be shown (the error is below). If the lake changed since it was sealed, "
             "`auditlake verify` says where.")
    st.code(shown(why[:500]), language=None)


def show_table(df, key: str | None = None, height: int | str = "auto", masked: bool = True) -> None:
    """A dataframe (canvas-rendered, inert text) in a container keyed `tbl-<key>` (the
    key is a CSS class for the browser test and a handle for AppTest). PII-shaped text is
    masked in every text column (what producers write is kept as written) unless `masked`
    is False: only the privacy officer's audited reveal shows it."""
    if len(df.columns):
        import pandas as pd

        df = df.copy()
        for c in df.columns:
            if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype):
                df[c] = df[c].map(lambda v: shown(v, masked) if isinstance(v, str) else v)
    box = st.container(key=f"tbl-{key}") if key else st.container()
    box.dataframe(df, hide_index=True, height=height)
