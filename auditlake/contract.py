"""The landing contract of EVENTS.md: event types, their required data, and validation.

`check_event` returns None for a valid event or a one-line reason. It is the single place
that decides what "meets the contract" means; ingest applies it to every line.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

MAX_LINE_BYTES = 64 * 1024

# ASCII digits only, and \Z: `$` would also match before a trailing newline.
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", re.ASCII)
# The offset's hours and minutes are checked here: fromisoformat reads "+05:99" as +06:39.
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)\Z", re.ASCII)
E164_RE = re.compile(r"^\+[1-9]\d{1,14}\Z", re.ASCII)
COUNTRY_RE = re.compile(r"^[A-Z]{2}\Z", re.ASCII)
CURRENCY_RE = re.compile(r"^[A-Z]{3}\Z", re.ASCII)
DECIMAL_RE = re.compile(r"^-?\d+(\.\d+)?\Z", re.ASCII)

ENVELOPE_FIELDS = frozenset(
    {"event_id", "occurred_at", "event_type", "source", "tenant_id", "actor", "subject", "lawful_basis", "data"}
)
ACTOR_TYPES = frozenset({"user", "service", "system"})
ACTOR_FIELDS = frozenset({"type", "id", "ip", "role"})
SUBJECT_FIELDS = frozenset({"id", "phone", "email", "name", "country", "region", "timezone"})
LAWFUL_BASES = frozenset(
    {"consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"}
)
PII_FIELDS = ("actor.ip", "subject.email", "subject.name", "subject.phone")

# Field kinds: "str" (non-empty string), "decimal", "currency", "int>=0", "int", or a set of allowed strings.
_STR, _DEC, _CUR, _NAT, _INT = "str", "decimal", "currency", "int>=0", "int"
CATALOG: dict[str, dict] = {
    "consent.granted": {
        "data": {"consent_id": _STR, "method": {"web_form", "ivr", "sms", "verbal"}, "seller": _STR},
        "optional": {"certificate_id": _STR, "disclosure_sha256": _STR},
        "phone": True,
    },
    "consent.revoked": {
        "data": {"method": _STR},
        "optional": {"consent_id": _STR, "keyword": _STR},
        "phone": True,
    },
    "dnc.added": {"data": {"list": {"internal", "national"}}, "phone": True},
    "dnc.removed": {"data": {"list": {"internal", "national"}}, "phone": True},
    "call.started": {
        "data": {
            "call_id": _STR,
            "direction": {"inbound", "outbound"},
            "purpose": {"telemarketing", "informational", "transactional"},
            "campaign_id": _STR,
            "publisher_id": _STR,
        },
        "optional": {"buyer_id": _STR},
        "phone": True,
    },
    "call.completed": {"data": {"call_id": _STR, "duration_s": _NAT, "disposition": _STR}},
    "bid.placed": {
        "data": {"bid_id": _STR, "call_id": _STR, "buyer_id": _STR, "amount": _DEC, "currency": _CUR}
    },
    "lead.sold": {"data": {"call_id": _STR, "buyer_id": _STR, "price": _DEC, "currency": _CUR}},
    "optout.received": {"data": {"via": {"gpc", "web_form", "email", "phone"}}, "subject": True},
    "payout.recorded": {
        "data": {"payout_id": _STR, "call_id": _STR, "publisher_id": _STR, "amount": _DEC, "currency": _CUR}
    },
    "payout.approved": {"data": {"payout_id": _STR}},
    "config.changed": {
        "data": {"setting": _STR, "category": {"financial", "routing", "security", "other"}},
        "present": ("old_value", "new_value"),
        "optional": {"change_ticket": "str?", "approved_by": "str?"},
    },
    "privacy.request_received": {
        "data": {
            "request_id": _STR,
            "regulation": {"gdpr", "ccpa"},
            "kind": {"access", "erasure", "correction", "opt_out"},
        },
        "subject": True,
    },
    "privacy.request_extended": {"data": {"request_id": _STR}},
    "privacy.request_completed": {
        "data": {"request_id": _STR, "outcome": {"fulfilled", "denied"}},
        "optional": {"denial_reason": "str?"},
    },
    "transfer.cross_border": {
        "data": {
            "destination_country": "country",
            "recipient": _STR,
            "mechanism": {"adequacy", "scc", "bcr", "none"},
        },
        "subject": True,
    },
    "user.login": {"data": {"method": _STR}},
    "user.login_failed": {"data": {"method": _STR, "reason": _STR}},
    "access.role_changed": {"data": {"target_user": _STR, "old_role": _STR, "new_role": _STR}},
    "data.exported": {"data": {"export_id": _STR, "rows": _NAT, "format": _STR}},
}
EVENT_TYPES = frozenset(CATALOG)


def parse_instant(s: str) -> datetime | None:
    """An RFC 3339 timestamp with Z or an offset, as an aware UTC datetime (None if invalid).
    Digits past microseconds are cut, never rounded into the next second."""
    if not isinstance(s, str) or not RFC3339_RE.match(s):
        return None
    if not s.isupper() and ("t" in s or "z" in s):
        s = s.upper()
    try:
        return datetime.fromisoformat(s).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset moves it past year 1 or 9999 in UTC
        return None


def _kind_check(kind):
    """A function value -> None or the problem, for one field kind (built once per kind)."""
    if isinstance(kind, set):
        allowed, problem = frozenset(kind), f"must be one of {sorted(kind)}"
        return lambda v: None if isinstance(v, str) and v in allowed else problem
    if kind == _STR:
        return lambda v: None if isinstance(v, str) and v != "" else "must be a non-empty string"
    if kind == "str?":
        return lambda v: None if v is None or isinstance(v, str) else "must be a string or null"
    if kind in (_DEC, _CUR, "country"):
        regex, problem = {_DEC: (DECIMAL_RE, "must be a decimal string"), _CUR: (CURRENCY_RE, "must be an ISO 4217 code"),
                          "country": (COUNTRY_RE, "must be an ISO 3166 alpha-2 code")}[kind]
        return lambda v: None if isinstance(v, str) and regex.match(v) else problem

    def integer(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return "must be an integer"
        return "must be >= 0" if kind == _NAT and v < 0 else None

    assert kind in (_NAT, _INT), kind
    return integer


# Per event type: (required data fields, members that must be present, optional fields),
# each field with its check.
_DATA_CHECKS = {
    name: (
        tuple((f, _kind_check(k)) for f, k in spec["data"].items()),
        tuple(spec.get("present", ())),
        tuple((f, _kind_check(k)) for f, k in spec.get("optional", {}).items()),
    )
    for name, spec in CATALOG.items()
}


def check_event(ev) -> str | None:
    """None if `ev` (a parsed JSON value) meets the contract, else a one-line reason."""
    return validate(ev)[1]


def validate(ev) -> tuple[datetime | None, str | None]:
    """(occurred_at as UTC, None) if `ev` meets the contract, else (None, reason)."""
    occurred = parse_instant(ev.get("occurred_at")) if isinstance(ev, dict) else None
    reason = _problem(ev, occurred)
    return (occurred, None) if reason is None else (None, reason)


_REQUIRED = ("event_id", "occurred_at", "event_type", "source", "tenant_id", "actor", "data")
_NON_EMPTY_STRINGS = ("event_id", "occurred_at", "event_type", "source", "tenant_id")
_SUBJECT_STRINGS = ("phone", "email", "name", "country", "region", "timezone")


_LEAP_SECOND = re.compile(r"\d{4}-\d\d-\d\d[Tt ](\d\d):(\d\d):60(?:\.\d+)?(?:[Zz]|([+-])(\d\d):(\d\d))$")


def _is_leap_second(text) -> bool:
    """RFC 3339's 23:59:60 UTC (at any offset): a time the ledger's POSIX instants lack."""
    m = _LEAP_SECOND.match(text) if isinstance(text, str) else None
    if not m:
        return False
    hh, mm, sign, oh, om = m.groups()
    offset = 0 if sign is None else (1 if sign == "+" else -1) * (int(oh) * 60 + int(om))
    return (int(hh) * 60 + int(mm) - offset) % 1440 == 23 * 60 + 59


def _problem(ev, occurred: datetime | None) -> str | None:
    if not isinstance(ev, dict):
        return "not a JSON object"
    if not ENVELOPE_FIELDS.issuperset(ev):
        return f"unknown envelope field: {sorted(set(ev) - ENVELOPE_FIELDS)[0]}"
    get = ev.get  # a local: this runs per landing line
    for name in _REQUIRED:
        if get(name) is None:
            return f"missing required field: {name}"
    for name in _NON_EMPTY_STRINGS:
        value = ev[name]
        if type(value) is not str or not value:
            return f"wrong type: {name} must be a non-empty string"
    if not UUID_RE.match(ev["event_id"]):
        return "bad event_id: not a canonical lowercase UUID"
    if occurred is None:
        if _is_leap_second(ev["occurred_at"]):
            return "bad occurred_at: a leap second (:60) has no instant in the time scale the ledger keeps (POSIX)"
        return "bad occurred_at: not an RFC 3339 timestamp with Z or an offset"
    spec = CATALOG.get(ev["event_type"])
    if spec is None:
        return f"unknown event_type: {ev['event_type'][:64]}"
    actor = ev["actor"]
    if not isinstance(actor, dict):
        return "wrong type: actor must be an object"
    if not ACTOR_FIELDS.issuperset(actor):
        return f"unknown actor field: {sorted(set(actor) - ACTOR_FIELDS)[0]}"
    if type(actor.get("type")) is not str or actor["type"] not in ACTOR_TYPES:  # a list would not hash
        return "bad actor.type: must be user, service or system"
    if not isinstance(actor.get("id"), str) or not actor["id"]:
        return "missing required field: actor.id"
    for name in ("ip", "role"):
        if actor.get(name) is not None and not isinstance(actor[name], str):
            return f"wrong type: actor.{name} must be a string"
    subject = ev.get("subject")
    if subject is not None:
        if not isinstance(subject, dict):
            return "wrong type: subject must be an object or null"
        if not SUBJECT_FIELDS.issuperset(subject):
            return f"unknown subject field: {sorted(set(subject) - SUBJECT_FIELDS)[0]}"
        sget = subject.get
        sid = sget("id")
        if type(sid) is not str or not sid:
            return "missing required field: subject.id"
        for name in _SUBJECT_STRINGS:
            value = sget(name)
            if value is not None and type(value) is not str:
                return f"wrong type: subject.{name} must be a string"
        phone, country = sget("phone"), sget("country")
        if phone is not None and not E164_RE.match(phone):
            return "bad subject.phone: not E.164"
        if country is not None and not COUNTRY_RE.match(country):
            return "bad subject.country: not ISO 3166 alpha-2"
    elif spec.get("subject") or spec.get("phone"):
        return "missing required field: subject"
    if spec.get("phone") and not (subject or {}).get("phone"):
        return "missing required field: subject.phone"
    lb = get("lawful_basis")
    if lb is not None and lb != "" and (type(lb) is not str or lb not in LAWFUL_BASES):
        return "bad lawful_basis: not a GDPR Art. 6 basis"
    data = ev["data"]
    if not isinstance(data, dict):
        return "wrong type: data must be an object"
    required, present, optional = _DATA_CHECKS[ev["event_type"]]
    for name, check in required:
        value = data.get(name)
        if value is None:
            return f"missing required field: data.{name}"
        problem = check(value)
        if problem:
            return f"bad data.{name}: {problem}"
    for name in present:
        if name not in data:
            return f"missing required field: data.{name}"
    for name, check in optional:
        value = data.get(name)
        if value is not None:
            problem = check(value)
            if problem:
                return f"bad data.{name}: {problem}"
    return None
