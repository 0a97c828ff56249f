"""Synthetic landing data for the lake, with planted rule violations and exact ground truth.

`generate(out_dir, events, seed)` writes `out_dir/landing/` and `out_dir/ground_truth.json`.
Landing files are one stream per producing service, split into parts: JSONL, JSONL.gz
and Parquet (actor/subject/data as JSON strings in even parts, as structs in odd ones);
about 0.5% of the lines are malformed or replayed. The ground truth:

    {"seed", "events" (lines written), "as_of", "findings": [{"rule_id", "event_id"}],
     "quarantine": {file: {"lines", "bad"}}, "accepted",
     "planted": [{"rule_id", "event_id", "flagged", "case"}],   # hand-placed boundary cases
     "malformed": [{"file", "line", "kind"}]}                  # every line that must be rejected

The quarantine counts assume the contract's ingest order: files by sorted name, lines in
order, so a replay (an exact copy placed later) is the copy that is rejected.
The findings are computed by the independent row-by-row oracle
(auditlake/compliance/oracle.py) over exactly the events an ingester must accept, so
background traffic can never add a finding that is not listed. Output is byte-identical
for the same arguments: one `random.Random(seed)` drives everything, in a fixed order.
"""
from __future__ import annotations

import gc
import gzip
import io
import random
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from auditlake.compliance.calendar import add_business_days, add_calendar_months
from auditlake.compliance.oracle import Oracle

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
DAY_US = 86_400 * US
DEFAULT_START = date(2026, 2, 23)   # with 30 days the window holds the 2026-03-08 DST switch
MALFORMED_SHARE = 0.005
REPLAY_SHARE = 0.2                  # of the malformed lines
MAX_OVERSIZE = 12                   # lines over 64 KiB are big; a few make the point

# Which producer writes which event types, and in which file format.
SERVICE_OF = {
    "consent.granted": "consent-service", "consent.revoked": "consent-service",
    "dnc.added": "consent-service", "dnc.removed": "consent-service",
    "call.started": "routing-engine", "call.completed": "routing-engine",
    "bid.placed": "bidding-service", "lead.sold": "bidding-service",
    "payout.recorded": "billing-service", "payout.approved": "billing-service",
    "optout.received": "privacy-service", "privacy.request_received": "privacy-service",
    "privacy.request_extended": "privacy-service", "privacy.request_completed": "privacy-service",
    "transfer.cross_border": "data-platform",
    "user.login": "identity-service", "user.login_failed": "identity-service",
    "access.role_changed": "admin-console", "config.changed": "admin-console",
    "data.exported": "auditlake",
}
FORMATS = {  # per service, cycling over its file parts
    "routing-engine": ("jsonl.gz", "jsonl"), "bidding-service": ("jsonl", "jsonl.gz"),
    "consent-service": ("jsonl",), "billing-service": ("parquet", "parquet-struct"),
    "privacy-service": ("jsonl.gz",), "data-platform": ("jsonl",),
    "identity-service": ("jsonl.gz",), "admin-console": ("jsonl",), "auditlake": ("jsonl",),
}
PARQUET_PART_SHARE = 4     # Parquet parts rotate this much sooner, so both layouts appear
PARQUET_COLUMNS = ("event_id", "occurred_at", "event_type", "source", "tenant_id",
                   "actor", "subject", "lawful_basis", "data")

US_STATES = [  # state, zone, weight, area codes
    ("CA", "America/Los_Angeles", 12, ("213", "310", "415", "619", "916")),
    ("TX", "America/Chicago", 9, ("214", "512", "713", "210")),
    ("FL", "America/New_York", 7, ("305", "407", "813")),
    ("NY", "America/New_York", 6, ("212", "518", "716")),
    ("IL", "America/Chicago", 4, ("312", "773", "217")),
    ("PA", "America/New_York", 4, ("215", "412")),
    ("OH", "America/New_York", 4, ("216", "614")),
    ("GA", "America/New_York", 3, ("404", "912")),
    ("MI", "America/Detroit", 3, ("313", "616")),
    ("AZ", "America/Phoenix", 2, ("480", "602")),
    ("CO", "America/Denver", 2, ("303", "719")),
    ("WA", "America/Los_Angeles", 2, ("206", "509")),
    ("IN", "America/Indiana/Indianapolis", 2, ("317",)),
    ("UT", "America/Denver", 1, ("801",)),
    ("HI", "Pacific/Honolulu", 1, ("808",)),
    ("AK", "America/Anchorage", 1, ("907",)),
]
EU_COUNTRIES = [  # country, zone, weight, phone prefix, currency
    ("DE", "Europe/Berlin", 5, "+4930", "EUR"), ("FR", "Europe/Paris", 4, "+336", "EUR"),
    ("IT", "Europe/Rome", 3, "+393", "EUR"), ("ES", "Europe/Madrid", 3, "+346", "EUR"),
    ("NL", "Europe/Amsterdam", 2, "+316", "EUR"), ("IE", "Europe/Dublin", 2, "+3538", "EUR"),
    ("PL", "Europe/Warsaw", 2, "+485", "PLN"), ("SE", "Europe/Stockholm", 1, "+467", "SEK"),
    ("NO", "Europe/Oslo", 1, "+474", "NOK"), ("GB", "Europe/London", 4, "+447", "GBP"),
    ("CH", "Europe/Zurich", 1, "+417", "CHF"),
]
FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
         "Elizabeth", "Maria", "Carlos", "Aisha", "Wei", "Priya", "Lukas", "Emma", "Sofia",
         "Mateo", "Chloe", "Noah", "Olivia", "Liam", "Ava", "Hannah", "Jonas", "Lea", "Giulia"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Rodriguez",
        "Martinez", "Lee", "Nguyen", "Patel", "Kim", "Muller", "Schmidt", "Rossi", "Dubois",
        "Kowalski", "Jansen", "Larsen", "O'Brien", "Murphy", "Fischer", "Bianchi", "Moreau"]
DOMAINS = ["example.com", "mail.example.net", "inbox.example.org", "example.de", "example.fr"]
TENANT_NAMES = ["acme-leads", "bluefin-media", "northwind-insurance", "sunrise-solar",
                "harbor-legal", "summit-home", "pioneer-health"]
DISPOSITIONS = ["answered", "answered", "answered", "voicemail", "no_answer", "busy", "converted"]
TRANSFERS = [("US", "adequacy"), ("US", "scc"), ("GB", "adequacy"), ("IN", "scc"),
             ("PH", "bcr"), ("CA", "adequacy"), ("JP", "adequacy"), ("SG", "scc")]
SETTINGS = {
    "financial": ["payout.rate_card", "payout.hold_days", "billing.currency", "invoice.terms"],
    "security": ["auth.mfa_required", "auth.session_ttl", "api.key_rotation_days", "sso.provider"],
    "routing": ["routing.max_concurrency", "routing.fallback_buyer", "routing.ring_timeout_s"],
    "other": ["ui.theme", "reports.timezone", "notifications.email_digest"],
}


# ------------------------------------------------------------------ time and ids

def _us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def rfc3339(t: datetime) -> str:
    t = t.astimezone(UTC)
    frac = f".{t.microsecond:06d}" if t.microsecond else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _local(day: date, h: int, m: int, s: int, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, s, tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(UTC)


def _us_dst_switches(year: int) -> list[date]:
    march = date(year, 3, 1)
    second_sunday = march + timedelta(days=(6 - march.weekday()) % 7 + 7)
    november = date(year, 11, 1)
    first_sunday = november + timedelta(days=(6 - november.weekday()) % 7)
    return [second_sunday, first_sunday]


def _sub_business_days(t: datetime, n: int) -> datetime | None:
    """Some r with add_business_days(r, n) == t (None when t is on a weekend)."""
    if t.weekday() >= 5:
        return None
    r, counted = t, 0
    while counted < n:
        r -= timedelta(days=1)
        if r.weekday() < 5:
            counted += 1
    return r if add_business_days(r, n) == t else None


class _Clock:
    """Fast RFC 3339 formatting of integer microseconds, in a few producer styles."""

    def __init__(self):
        self._days: dict[int, str] = {}
        self._clock = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]

    def _day(self, n: int) -> str:
        s = self._days.get(n)
        if s is None:
            s = self._days[n] = (date(1970, 1, 1) + timedelta(days=n)).isoformat()
        return s

    def fmt(self, us: int, style: str = "ms", offset_min: int = 0) -> str:
        local = us + offset_min * 60 * US
        days, rem = divmod(local, DAY_US)
        secs, frac = divmod(rem, US)
        head = self._day(days) + "T" + self._clock[secs]
        if style == "ms":
            tail = f".{frac // 1000:03d}"
        elif style == "us":
            tail = f".{frac:06d}"
        else:  # "s": whole seconds unless the instant has a fraction
            tail = f".{frac:06d}" if frac else ""
        if offset_min == 0:
            return head + tail + ("+00:00" if style == "s+00:00" else "Z")
        sign = "+" if offset_min > 0 else "-"
        oh, om = divmod(abs(offset_min), 60)
        return f"{head}{tail}{sign}{oh:02d}:{om:02d}"


class _Ids:
    """Unique, random-looking ids: a counter through an odd 64-bit multiplier (a bijection)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.salt = rng.getrandbits(64)
        self.n = 0
        self.uuids: set[str] = set()

    def token(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{((self.n * 0x9E3779B97F4A7C15) ^ self.salt) & 0xFFFFFFFFFFFF:012x}"

    def uuid(self) -> str:
        while True:
            n = self.rng.getrandbits(128)
            h = f"{n:032x}"
            # version 4, RFC 4122 variant (8, 9, a or b); the draw's lowest bits pick it
            u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[n & 3]}{h[17:20]}-{h[20:]}"
            if u not in self.uuids:
                self.uuids.add(u)
                return u


# ---------------------------------------------------------------- landing files

def _is_parquet(service: str) -> bool:
    return FORMATS[service][0].startswith("parquet")


class _Landing:
    """Routes lines to per-service file parts, rotating parts by size, and counts
    lines and rejects per file. JSONL parts stay open so replays can be appended."""

    def __init__(self, folder: Path, part_lines: int):
        self.folder = folder
        self.part_lines = part_lines
        self.current: dict[str, dict] = {}
        self.parts: dict[str, dict] = {}   # file name -> part
        self.count: dict[str, int] = {}    # service -> parts opened

    def part(self, service: str) -> dict:
        p = self.current.get(service)
        if p is not None and p["lines"] < p["limit"]:
            return p
        # The current part is full (or there is none): start the next one.
        parquet = _is_parquet(service)
        if p is not None and parquet:
            self._write_parquet(p)
        n = self.count.get(service, 0)
        self.count[service] = n + 1
        kind = FORMATS[service][n % len(FORMATS[service])]
        name = f"{service}-{n:03d}.{'parquet' if parquet else kind}"
        limit = max(50, self.part_lines // PARQUET_PART_SHARE) if parquet else self.part_lines
        p = {"name": name, "kind": kind, "lines": 0, "bad": 0, "buf": [], "rows": [], "limit": limit}
        if not parquet:
            raw = open(self.folder / name, "wb")
            p["raw"] = raw
            p["fh"] = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) \
                if kind == "jsonl.gz" else raw
        self.current[service] = p
        self.parts[name] = p
        return p

    def line(self, p: dict, data: bytes, bad: bool = False) -> int:
        """Append one JSONL line; returns its 1-based line number."""
        p["buf"].append(data + b"\n")
        p["lines"] += 1
        p["bad"] += bad
        if len(p["buf"]) >= 4096:
            p["fh"].write(b"".join(p["buf"]))
            p["buf"].clear()
        return p["lines"]

    def row(self, p: dict, event: dict, bad: bool = False) -> int:
        """Append one Parquet row (an envelope dict); returns its 1-based row number."""
        p["rows"].append({c: event.get(c) for c in PARQUET_COLUMNS})
        p["lines"] += 1
        p["bad"] += bad
        return p["lines"]

    def _write_parquet(self, p: dict) -> None:
        # EVENTS.md allows actor/subject/data as JSON strings or structs; the two layouts
        # alternate. (A struct column has the union of the rows' keys, so a row's `data`
        # reads back with the other rows' keys as nulls, which every rule treats as absent.)
        nested = ("actor", "subject", "data")
        columns = {}
        if p["kind"] == "parquet-struct":  # Arrow's JSON reader infers the structs, fast
            lines = b"\n".join(orjson.dumps({c: r[c] for c in nested}) for r in p["rows"])
            structs = pj.read_json(io.BytesIO(lines))
            for c in nested:   # an all-null column stays a string column
                col = structs.column(c)
                columns[c] = col.cast(pa.string()) if col.type == pa.null() else col
        for c in PARQUET_COLUMNS:
            values = [r[c] for r in p["rows"]]
            if c in columns:
                continue
            if c in nested:
                values = [None if v is None else orjson.dumps(v).decode() for v in values]
            columns[c] = pa.array(values, type=pa.string())
        columns = {c: columns[c] for c in PARQUET_COLUMNS}
        pq.write_table(pa.table(columns), self.folder / p["name"], compression="zstd")
        p["rows"] = []

    def close(self) -> None:
        for p in self.parts.values():
            if p["kind"].startswith("parquet"):
                if p["rows"] or not (self.folder / p["name"]).exists():
                    self._write_parquet(p)
                continue
            if p["buf"]:
                p["fh"].write(b"".join(p["buf"]))
            p["fh"].close()
            if p["fh"] is not p["raw"]:
                p["raw"].close()

    def quarantine(self) -> dict[str, dict]:
        return {name: {"lines": p["lines"], "bad": p["bad"]} for name, p in sorted(self.parts.items())}


# --------------------------------------------------------------------- the world

@dataclass
class _Tenant:
    id: str
    publishers: list[str]
    buyers: list[str]
    campaigns: list[str]
    staff: list[dict]   # {"id", "role", "ip"}


class _World:
    """Tenants, people and event construction shared by the planted and background parts."""

    def __init__(self, rng: random.Random, ids: _Ids, clock: _Clock):
        self.rng, self.ids, self.clock = rng, ids, clock
        self.phones: set[str] = set()
        names = rng.sample(TENANT_NAMES, 3)
        self.tenants = []
        for name in names:
            staff = [{"id": ids.token("usr"), "role": role, "ip": self.ip()}
                     for role in ("admin", "finance", "finance", "ops", "ops", "analyst", "security", "compliance")]
            self.tenants.append(_Tenant(
                id=name,
                publishers=[ids.token("pub") for _ in range(12)],
                buyers=[ids.token("buy") for _ in range(10)],
                campaigns=[ids.token("cmp") for _ in range(8)],
                staff=staff))
        self.us_weights = [s[2] for s in US_STATES]
        self.eu_weights = [c[2] for c in EU_COUNTRIES]

    def ip(self) -> str:
        r = self.rng
        return f"{r.choice(('203.0.113', '198.51.100', '192.0.2'))}.{r.randint(1, 254)}"

    def consumer_ip(self) -> str:
        r = self.rng
        return f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _unique_phone(self, make) -> str:
        while True:
            phone = make()
            if phone not in self.phones:
                self.phones.add(phone)
                return phone

    def us_person(self, state: tuple | None = None, *, zone=..., reserved: bool = False) -> dict:
        r = self.rng
        code, tz, _w, areas = state or r.choices(US_STATES, self.us_weights)[0]
        def number() -> str:
            if reserved:  # planted people use the fictional 555-01xx block; background never does
                return f"+1{r.choice(areas)}5550{r.randint(100, 199)}"
            while True:
                exchange = f"{r.choice('23456789')}{r.randint(0, 99):02d}"
                if exchange != "555":
                    return f"+1{r.choice(areas)}{exchange}{r.randint(0, 9999):04d}"

        phone = self._unique_phone(number)
        first, last = r.choice(FIRST), r.choice(LAST)
        p = {"id": self.ids.token("sub"), "phone": phone, "name": f"{first} {last}",
             "email": f"{first.lower()}.{last.lower().replace(chr(39), '')}{r.randint(1, 999)}@{r.choice(DOMAINS)}",
             "country": "US", "region": code}
        if zone is ...:
            roll = r.random()
            if roll < 0.06:
                pass                 # no time zone at all
            elif roll < 0.10:
                p["timezone"] = None  # explicitly unknown
            else:
                p["timezone"] = tz
        elif zone is not None or r.random() < 0.5:
            p["timezone"] = zone
        return p

    def eu_person(self, country: tuple | None = None, *, reserved: bool = False) -> dict:
        r = self.rng
        code, tz, _w, prefix, _cur = country or r.choices(EU_COUNTRIES, self.eu_weights)[0]
        block = "0100" if reserved else ""
        phone = self._unique_phone(lambda: f"{prefix}{block}{r.randint(1000000, 9999999)}")
        first, last = r.choice(FIRST), r.choice(LAST)
        return {"id": self.ids.token("sub"), "phone": phone, "name": f"{first} {last}",
                "email": f"{first.lower()}.{r.randint(1, 999)}@{r.choice(DOMAINS)}",
                "country": code, "region": None, "timezone": tz}

    @staticmethod
    def currency(person: dict) -> str:
        for code, _tz, _w, _p, cur in EU_COUNTRIES:
            if person.get("country") == code:
                return cur
        return "USD"

    def event(self, event_type: str, when: str, tenant: str, actor: dict, subject: dict | None,
              data: dict, basis: str | None = None) -> dict:
        return {"event_id": self.ids.uuid(), "occurred_at": when, "event_type": event_type,
                "source": SERVICE_OF[event_type], "tenant_id": tenant, "actor": actor,
                "subject": subject, "lawful_basis": basis, "data": data}


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _svc(name: str) -> dict:
    return {"type": "service", "id": name}


# ------------------------------------------------------------------ planted cases

class _Plan:
    """Hand-placed events at every boundary RULES.md draws, with the verdict each must get."""

    def __init__(self, world: _World, as_of: datetime, window_start: datetime):
        self.w, self.rng = world, world.rng
        self.as_of, self.start = as_of, window_start
        self.events: list[dict] = []
        self.expected: list[dict] = []
        self.t1, self.t2 = world.tenants[0], world.tenants[1]
        dst = self.dst_day()
        # Standing consents predate every planted call (the DST day may precede the window).
        self.early = min(window_start, datetime(dst.year, dst.month, dst.day, tzinfo=UTC)) - timedelta(days=40)

    # --- building blocks ---------------------------------------------------------
    def add(self, event_type, at: datetime, subject=None, *, tenant=None, actor=None, basis=None,
            style="s", **data) -> dict:
        clock = self.w.clock
        if style.startswith("zone:"):  # the producer's local offset, as some services write it
            offset = int(at.astimezone(zoneinfo.ZoneInfo(style[5:])).utcoffset() // timedelta(minutes=1))
            when = clock.fmt(_us(at), "s", offset)
        else:
            if style == "s" and self.rng.random() < 0.15:
                style = "s+00:00"   # some producers write +00:00 rather than Z
            when = clock.fmt(_us(at), style)
        actor = actor or _svc(SERVICE_OF[event_type])
        e = self.w.event(event_type, when, (tenant or self.t1).id, actor, subject, data, basis)
        self.events.append(e)
        return e

    def expect(self, rule: str, event: dict, flagged: bool, case: str) -> None:
        self.expected.append({"rule_id": rule, "event_id": event["event_id"], "flagged": flagged, "case": case})

    def person(self, state="IL", zone=...):
        st = next(s for s in US_STATES if s[0] == state)
        return self.w.us_person(st, zone=st[1] if zone is ... else zone, reserved=True)

    def call(self, who, at, *, tenant=None, direction="outbound", purpose="telemarketing", style="s"):
        t = tenant or self.t1
        return self.add("call.started", at, who, tenant=t, style=style, call_id=self.w.ids.token("call"),
                        direction=direction, purpose=purpose, campaign_id=t.campaigns[0],
                        publisher_id=t.publishers[0], buyer_id=t.buyers[0])

    def grant(self, who, at, *, tenant=None):
        t = tenant or self.t1
        return self.add("consent.granted", at, who, tenant=t, actor={"type": "system", "id": "webform", "ip": self.w.consumer_ip()},
                        consent_id=self.w.ids.token("cns"), method="web_form", seller=t.publishers[0],
                        certificate_id=self.w.ids.token("cert"))

    def revoke(self, who, at, *, tenant=None):
        return self.add("consent.revoked", at, who, tenant=tenant, method="sms", keyword="STOP")

    def dnc(self, who, at, kind="added", lst="internal", *, tenant=None):
        return self.add(f"dnc.{kind}", at, who, tenant=tenant, list=lst)

    def user(self, tenant=None, role="finance", k=0) -> dict:
        staff = [s for s in (tenant or self.t1).staff if s["role"] == role]
        s = staff[k % len(staff)]
        return {"type": "user", "id": s["id"], "role": s["role"], "ip": s["ip"]}

    def friday_before(self, limit: datetime, n: int, hour: int) -> datetime:
        """The latest Friday `hour`:00Z whose + n business days + 1 s is at or before limit."""
        d = limit.date()
        while True:
            t = datetime(d.year, d.month, d.day, hour, tzinfo=UTC)
            if d.weekday() == 4 and add_business_days(t, n) + timedelta(seconds=1) <= limit:
                return t
            d -= timedelta(days=1)

    # --- the cases ------------------------------------------------------------------
    def build(self) -> None:
        for part in (self.tcpa_hours, self.tcpa_consent, self.tcpa_revoked, self.tcpa_dnc,
                     self.gdpr_basis, self.gdpr_transfer, self.gdpr_late, self.ccpa_late,
                     self.ccpa_sale, self.sox_sod, self.sox_change, self.coverage):
            part()
        # The as_of anchor: the latest accepted event of the whole data set.
        self.add("user.login", self.as_of, actor=self.user(role="admin"), method="sso")

    def _hours(self, who, day, zone, cases, label, style="s"):
        for h, m, s, flagged in cases:
            e = self.call(who, _local(day, h, m, s, zone), style=style)
            self.expect("TCPA-HOURS", e, flagged, f"{label} {h:02d}:{m:02d}:{s:02d} {zone}")

    def tcpa_hours(self):
        edges = [(7, 59, 59, True), (8, 0, 0, False), (20, 59, 59, False), (21, 0, 0, True)]
        plain = (self.as_of - timedelta(days=5)).date()
        dst = self.dst_day()
        chi = self.person("IL")
        self.grant(chi, self.early)
        self._hours(chi, plain, "America/Chicago", edges, "ordinary day")
        ny = self.person("NY")
        self.grant(ny, self.early)
        self._hours(ny, dst, "America/New_York", edges, "DST switch day", style="zone:America/New_York")
        self._hours(ny, dst - timedelta(days=1), "America/New_York", edges[:2], "day before the DST switch")
        la = self.person("CA")
        self.grant(la, self.early)
        self._hours(la, dst, "America/Los_Angeles", edges, "DST switch day")
        phx = self.person("AZ")
        self.grant(phx, self.early)
        self._hours(phx, dst, "America/Phoenix", edges[:2], "DST switch day, no DST in Arizona")
        # No zone (absent, null) or an unknown name: inside 08:00-21:00 in all four US zones,
        # i.e. from 08:00 Pacific to 21:00 Eastern.
        for zone, label in ((None, "no time zone"), ("absent", "time zone field absent"),
                            ("America/Atlantis", "unknown zone name")):
            who = self.person("TX", zone=zone if zone != "absent" else None)
            if zone == "absent":
                who.pop("timezone", None)
            else:
                who["timezone"] = zone
            self.grant(who, self.early)
            for day in (dst, dst - timedelta(days=1)):
                for at, flagged, edge in (
                        (_local(day, 7, 59, 59, "America/Los_Angeles"), True, "07:59:59 Pacific"),
                        (_local(day, 8, 0, 0, "America/Los_Angeles"), False, "08:00:00 Pacific"),
                        (_local(day, 20, 59, 59, "America/New_York"), False, "20:59:59 Eastern"),
                        (_local(day, 21, 0, 0, "America/New_York"), True, "21:00:00 Eastern")):
                    self.expect("TCPA-HOURS", self.call(who, at), flagged, f"{label}, {day} {edge}")
        # Not outbound telemarketing: never judged on hours.
        night = _local(plain, 3, 0, 0, "America/Chicago")
        self.expect("TCPA-HOURS", self.call(chi, night, direction="inbound"), False, "inbound call at 03:00")
        self.expect("TCPA-HOURS", self.call(chi, night, purpose="informational"), False,
                    "outbound informational call at 03:00")

    def dst_day(self) -> date:
        lo, hi = self.start.date(), self.as_of.date()
        switches = sorted(d for y in range(lo.year - 1, hi.year + 1) for d in _us_dst_switches(y))
        inside = [d for d in switches if lo <= d < hi]
        return inside[0] if inside else max(d for d in switches if d < hi)

    def tcpa_consent(self):
        at = _local((self.as_of - timedelta(days=6)).date(), 11, 0, 0, "America/Chicago")
        a = self.person("IL")
        self.expect("TCPA-CONSENT", self.call(a, at), True, "no consent at all")
        b = self.person("IL")
        self.grant(b, at)
        self.expect("TCPA-CONSENT", self.call(b, at), False, "consent granted at the call's instant")
        c = self.person("IL")
        call = self.call(c, at)
        self.grant(c, at + timedelta(seconds=1))
        self.expect("TCPA-CONSENT", call, True, "consent granted one second after the call")
        d = self.person("IL")
        self.grant(d, at - timedelta(days=3), tenant=self.t2)
        self.expect("TCPA-CONSENT", self.call(d, at), True, "consent only in another tenant")
        self.expect("TCPA-CONSENT", self.call(d, at, tenant=self.t2), False, "consent in the call's tenant")

    def tcpa_revoked(self):
        f = self.friday_before(self.as_of - timedelta(days=1), 10, 15)
        limit = add_business_days(f, 10)
        p = self.person("NY")
        self.grant(p, f - timedelta(days=10))
        self.revoke(p, f)
        self.expect("TCPA-REVOKED", self.call(p, f + timedelta(days=3)), False, "call within 10 business days")
        self.expect("TCPA-REVOKED", self.call(p, limit), False, "call exactly 10 business days after")
        self.expect("TCPA-REVOKED", self.call(p, limit + timedelta(seconds=1)), True,
                    "call 10 business days and 1 s after")
        for order in ("grant first", "revoke first"):
            q = self.person("NY")
            if order == "grant first":
                self.grant(q, f)
                self.revoke(q, f)
            else:
                self.revoke(q, f)
                self.grant(q, f)
            self.expect("TCPA-REVOKED", self.call(q, limit + timedelta(seconds=1)), True,
                        f"grant and revoke at one instant ({order}): the revocation is later")
        r = self.person("NY")
        self.grant(r, f - timedelta(days=10))
        self.revoke(r, f - timedelta(days=9))
        self.grant(r, f - timedelta(days=8))
        self.expect("TCPA-REVOKED", self.call(r, limit + timedelta(seconds=1)), False, "re-granted after revoking")

    def tcpa_dnc(self):
        f = self.friday_before(self.as_of - timedelta(days=2), 10, 16)
        limit = add_business_days(f, 10)
        people = [self.person("IL") for _ in range(8)]
        for i, p in enumerate(people):
            if i != 4:
                self.grant(p, f - timedelta(days=14))
        p = people
        self.dnc(p[0], f)
        self.expect("TCPA-DNC", self.call(p[0], limit), False, "internal DNC, exactly 10 business days")
        self.expect("TCPA-DNC", self.call(p[0], limit + timedelta(seconds=1)), True, "internal DNC, 10 business days + 1 s")
        self.dnc(p[1], f)
        self.dnc(p[1], f + timedelta(days=3), "removed")
        self.expect("TCPA-DNC", self.call(p[1], limit + timedelta(hours=1)), False, "internal DNC removed")
        self.dnc(p[2], f, "removed")
        self.dnc(p[2], f)
        self.expect("TCPA-DNC", self.call(p[2], limit + timedelta(seconds=1)), True,
                    "internal DNC added and removed at one instant: the addition is later")
        self.dnc(p[3], f, lst="national")
        self.expect("TCPA-DNC", self.call(p[3], f + timedelta(days=3)), False, "national DNC with consent")
        self.dnc(p[4], f, lst="national")
        call = self.call(p[4], f + timedelta(days=3))
        self.expect("TCPA-DNC", call, True, "national DNC, never consented")
        self.expect("TCPA-CONSENT", call, True, "national DNC, never consented (so no consent either)")
        self.dnc(p[5], f - timedelta(days=5), lst="national")
        self.revoke(p[5], f)
        call = self.call(p[5], f + timedelta(days=3))
        self.expect("TCPA-DNC", call, True, "national DNC, consent revoked 1 business day ago")
        self.expect("TCPA-REVOKED", call, False, "revoked 1 business day before the call")
        self.dnc(p[6], f - timedelta(days=5), lst="national")
        self.dnc(p[6], f - timedelta(days=4), "removed", lst="national")
        self.expect("TCPA-DNC", self.call(p[6], f + timedelta(days=3)), False, "national DNC removed")
        self.dnc(p[7], f - timedelta(days=5), tenant=self.t2)
        self.expect("TCPA-DNC", self.call(p[7], limit + timedelta(days=1)), False, "internal DNC in another tenant")

    def gdpr_basis(self):
        at = self.as_of - timedelta(days=4, hours=3)

        def completed(subject, basis, actor=None):
            return self.add("call.completed", at, subject, basis=basis, actor=actor,
                            call_id=self.w.ids.token("call"), duration_s=42, disposition="answered")

        def person(country):
            return self.w.eu_person(next(c for c in EU_COUNTRIES if c[0] == country), reserved=True)

        self.expect("GDPR-BASIS", completed(person("DE"), None), True, "DE subject with PII, null basis")
        self.expect("GDPR-BASIS", completed(person("FR"), ""), True, "FR subject with PII, empty basis")
        self.expect("GDPR-BASIS", completed(person("DE"), "consent"), False, "DE subject with PII and a basis")
        self.expect("GDPR-BASIS", completed(person("NO"), None), True, "NO (EEA, not EU), null basis")
        self.expect("GDPR-BASIS", completed(person("GB"), None), False, "GB is not in the EEA")
        self.expect("GDPR-BASIS", completed(person("CH"), None), False, "CH is not in the EEA")
        self.expect("GDPR-BASIS", completed(self.person("IL"), None), False, "US subject")
        sid = person("DE")
        bare = {"id": sid["id"], "country": "DE"}
        self.expect("GDPR-BASIS", completed(bare, None), False, "DE subject without PII")
        self.expect("GDPR-BASIS", completed(dict(bare, email="", name=""), None), False,
                    "DE subject whose PII fields are empty strings")
        self.expect("GDPR-BASIS", completed(bare, None, actor={"type": "user", "id": "agent-7", "ip": "203.0.113.77"}),
                    True, "DE subject, PII only in actor.ip")

    def gdpr_transfer(self):
        at = self.as_of - timedelta(days=3, hours=5)
        cases = [("DE", "US", "adequacy", False), ("DE", "IN", "adequacy", True), ("DE", "BR", "scc", False),
                 ("FR", "SG", "none", True), ("DE", "FR", "none", False), ("IT", "CH", "adequacy", False),
                 ("NO", "IN", "none", True), ("GB", "IN", "none", False), ("DE", "IN", "bcr", False)]
        for origin, dest, mechanism, flagged in cases:
            if origin == "US":
                who = self.person("IL")
            else:
                who = self.w.eu_person(next(c for c in EU_COUNTRIES if c[0] == origin), reserved=True)
            e = self.add("transfer.cross_border", at, {"id": who["id"], "country": who["country"]},
                         basis="legitimate_interests", destination_country=dest,
                         recipient=f"{dest.lower()}-processor", mechanism=mechanism)
            self.expect("GDPR-TRANSFER", e, flagged, f"{origin} -> {dest} via {mechanism}")
        us = self.person("CA")
        e = self.add("transfer.cross_border", at, {"id": us["id"], "country": "US", "region": "CA"},
                     destination_country="IN", recipient="in-processor", mechanism="none")
        self.expect("GDPR-TRANSFER", e, False, "US subject -> IN via none")

    def _request(self, at, regulation, kind, country="DE"):
        who = self.w.eu_person(EU_COUNTRIES[0], reserved=True) if country == "DE" else self.person("CA")
        rid = self.w.ids.token("req")
        e = self.add("privacy.request_received", at, {"id": who["id"], "country": who["country"],
                                                      "email": who["email"]},
                     basis="legal_obligation", request_id=rid, regulation=regulation, kind=kind)
        return e, rid

    def _extend(self, at, rid):
        return self.add("privacy.request_extended", at, actor=self.user(role="compliance"), request_id=rid,
                        reason="complex request")

    def _complete(self, at, rid):
        return self.add("privacy.request_completed", at, actor=self.user(role="compliance"), request_id=rid,
                        outcome="fulfilled")

    def gdpr_late(self):
        sec = timedelta(seconds=1)
        m31 = self.month_end()
        r = datetime(m31.year, m31.month, m31.day, 10, tzinfo=UTC)
        first = add_calendar_months(r, 1)
        e, rid = self._request(r, "gdpr", "access")
        self._complete(first, rid)
        self.expect("GDPR-LATE", e, False, f"received {r:%d %b} 10:00, completed at + 1 month ({first:%d %b})")
        e, rid = self._request(r, "gdpr", "erasure")
        self._complete(first + sec, rid)
        self.expect("GDPR-LATE", e, True, "completed 1 s after + 1 calendar month")
        e, rid = self._request(r, "gdpr", "access")
        self._complete(first + sec, rid)
        self._complete(first - timedelta(days=1), rid)
        self.expect("GDPR-LATE", e, False, "completed twice, the first on time")
        # Extensions: strictly before the first deadline moves it to + 3 months.
        r2 = self.as_of - timedelta(days=50)
        first2 = add_calendar_months(r2, 1)
        for ext_at, flagged, label in ((first2 - sec, False, "extended 1 s before the first deadline"),
                                       (first2, True, "extended exactly at the first deadline"),
                                       (first2 + timedelta(days=1), True, "extended after the first deadline")):
            e, rid = self._request(r2, "gdpr", "correction")
            self._extend(ext_at, rid)
            self._complete(first2 + timedelta(days=10), rid)
            self.expect("GDPR-LATE", e, flagged, label + ", completed 10 days after it")
        r3 = self.as_of - timedelta(days=100)
        third = add_calendar_months(r3, 3)
        for done, flagged, label in ((third, False, "exactly + 3 months"), (third + sec, True, "+ 3 months + 1 s")):
            e, rid = self._request(r3, "gdpr", "access")
            self._extend(r3 + timedelta(days=20), rid)
            self._complete(done, rid)
            self.expect("GDPR-LATE", e, flagged, f"extended, completed {label}")
        # Still open as of as_of.
        back = self.month_before(self.as_of)
        if back is not None:
            e, _ = self._request(back, "gdpr", "access")
            self.expect("GDPR-LATE", e, False, "open, deadline == as_of")
            e, _ = self._request(back - sec, "gdpr", "access")
            self.expect("GDPR-LATE", e, True, "open, deadline 1 s before as_of")
        e, _ = self._request(self.as_of - timedelta(days=10), "gdpr", "access")
        self.expect("GDPR-LATE", e, False, "open, deadline after as_of")

    def month_end(self) -> date:
        """The latest 31st whose next month is shorter, early enough to complete after it."""
        d = (self.as_of - timedelta(days=3)).date()
        while True:
            if d.day == 31 and add_calendar_months(datetime(d.year, d.month, d.day, tzinfo=UTC), 1).day < 31 \
                    and add_calendar_months(datetime(d.year, d.month, d.day, 10, tzinfo=UTC), 1) < self.as_of - timedelta(days=2):
                return d
            d -= timedelta(days=1)

    @staticmethod
    def month_before(t: datetime) -> datetime | None:
        r = add_calendar_months(t, -1)
        return r if add_calendar_months(r, 1) == t else None

    def ccpa_late(self):
        sec = timedelta(seconds=1)
        r = (self.as_of - timedelta(days=60)).replace(hour=12, minute=0, second=0, microsecond=0)
        d45 = r + timedelta(days=45)
        for done, flagged, label in ((d45, False, "completed exactly + 45 days"),
                                     (d45 + sec, True, "completed + 45 days + 1 s")):
            e, rid = self._request(r, "ccpa", "access", "US")
            self._complete(done, rid)
            self.expect("CCPA-LATE", e, flagged, label)
        for ext_at, flagged, label in ((d45 - sec, False, "extended 1 s before + 45 days"),
                                       (d45, True, "extended exactly at + 45 days")):
            e, rid = self._request(r, "ccpa", "erasure", "US")
            self._extend(ext_at, rid)
            self._complete(d45 + timedelta(days=5), rid)
            self.expect("CCPA-LATE", e, flagged, label + ", completed + 50 days")
        r90 = (self.as_of - timedelta(days=95)).replace(hour=12, minute=0, second=0, microsecond=0)
        for done, flagged, label in ((r90 + timedelta(days=90), False, "exactly + 90 days"),
                                     (r90 + timedelta(days=90) + sec, True, "+ 90 days + 1 s")):
            e, rid = self._request(r90, "ccpa", "correction", "US")
            self._extend(r90 + timedelta(days=30), rid)
            self._complete(done, rid)
            self.expect("CCPA-LATE", e, flagged, f"extended, completed {label}")
        f = self.friday_before(self.as_of - timedelta(days=1), 15, 12)
        b15 = add_business_days(f, 15)
        for done, flagged, label in ((b15, False, "opt-out completed exactly 15 business days after"),
                                     (b15 + sec, True, "opt-out completed 15 business days + 1 s after")):
            e, rid = self._request(f, "ccpa", "opt_out", "US")
            self._complete(done, rid)
            self.expect("CCPA-LATE", e, flagged, label)
        e, rid = self._request(f, "ccpa", "opt_out", "US")
        self._extend(f + timedelta(days=3), rid)
        self._complete(b15 + timedelta(days=1), rid)
        self.expect("CCPA-LATE", e, True, "opt-out extended (extensions do not apply), completed late")
        e, _ = self._request(self.as_of - timedelta(days=45), "ccpa", "access", "US")
        self.expect("CCPA-LATE", e, False, "open, + 45 days == as_of")
        e, _ = self._request(self.as_of - timedelta(days=45) - sec, "ccpa", "access", "US")
        self.expect("CCPA-LATE", e, True, "open, + 45 days 1 s before as_of")
        back = _sub_business_days(self.as_of, 15)
        if back is not None:
            e, _ = self._request(back, "ccpa", "opt_out", "US")
            self.expect("CCPA-LATE", e, False, "open opt-out, + 15 business days == as_of")
            e, _ = self._request(back - sec, "ccpa", "opt_out", "US")
            self.expect("CCPA-LATE", e, True, "open opt-out, + 15 business days 1 s before as_of")
        e, _ = self._request(self.as_of - timedelta(days=100), "gdpr", "access", "US")  # not CCPA's
        self.expect("CCPA-LATE", e, False, "a GDPR request is not judged by CCPA-LATE")
        self.expect("GDPR-LATE", e, True, "a GDPR request open 100 days")

    def ccpa_sale(self):
        sec = timedelta(seconds=1)
        f = self.friday_before(self.as_of - timedelta(days=1), 15, 17)
        limit = add_business_days(f, 15)
        t = self.t1

        def sold(subject, at, tenant=None):
            tt = tenant or t
            return self.add("lead.sold", at, subject, tenant=tt, call_id=self.w.ids.token("call"),
                            buyer_id=tt.buyers[1], price="35.00", currency="USD")

        def optout(who, at, tenant=None):
            return self.add("optout.received", at, {"id": who["id"]}, tenant=tenant, via="gpc")

        def seen(who, at, country, region):
            subject = {"id": who["id"], "country": country, "region": region}
            return self.add("call.completed", at, subject, call_id=self.w.ids.token("call"),
                            duration_s=95, disposition="converted")

        ca = self.person("CA")
        geo = {"id": ca["id"], "country": "US", "region": "CA"}
        optout(ca, f)
        self.expect("CCPA-SALE", sold(geo, f - timedelta(days=1)), False, "sale before the opt-out")
        self.expect("CCPA-SALE", sold(geo, limit), False, "sale exactly 15 business days after the opt-out")
        self.expect("CCPA-SALE", sold(geo, limit + sec), True, "sale 15 business days + 1 s after the opt-out")
        self.expect("CCPA-SALE", sold(geo, limit + timedelta(days=1), tenant=self.t2), False,
                    "opt-out recorded in another tenant")
        ny = self.person("NY")
        optout(ny, f)
        self.expect("CCPA-SALE", sold({"id": ny["id"], "country": "US", "region": "NY"}, limit + sec), False,
                    "not a Californian")
        fb = self.person("CA")
        seen(fb, f - timedelta(days=2), "US", "CA")
        optout(fb, f)
        self.expect("CCPA-SALE", sold({"id": fb["id"]}, limit + sec), True,
                    "sale lacking country/region; earlier event says US/CA")
        later = self.person("CA")
        optout(later, f)
        self.expect("CCPA-SALE", sold({"id": later["id"]}, limit + sec), False,
                    "sale lacking country/region; US/CA only known after the sale")
        seen(later, limit + 2 * sec, "US", "CA")
        two = self.person("CA")
        optout(two, f)
        optout(two, f + timedelta(days=7))
        self.expect("CCPA-SALE", sold({"id": two["id"], "country": "US", "region": "CA"}, limit + sec), True,
                    "two opt-outs: the earliest counts")

    def sox_sod(self):
        at = (self.as_of - timedelta(days=2)).replace(hour=14, minute=0, second=0, microsecond=0)
        t = self.t1

        def rec(pid, when, actor, tenant=None):
            tt = tenant or t
            return self.add("payout.recorded", when, tenant=tt, actor=actor, payout_id=pid,
                            call_id=self.w.ids.token("call"), publisher_id=tt.publishers[2], amount="18.40",
                            currency="USD")

        def appr(pid, when, actor, tenant=None):
            return self.add("payout.approved", when, tenant=tenant, actor=actor, payout_id=pid)

        a, b = self.user(role="finance", k=0), self.user(role="finance", k=1)
        billing = _svc("billing-service")
        sec = timedelta(seconds=1)
        pid = self.w.ids.token("po")
        rec(pid, at - timedelta(hours=2), billing)
        self.expect("SOX-SOD", appr(pid, at, b), False, "recorded by the billing service, approved by a person")
        pid = self.w.ids.token("po")
        rec(pid, at - timedelta(hours=2), a)
        self.expect("SOX-SOD", appr(pid, at, a), True, "self-approved")
        self.expect("SOX-SOD", appr(self.w.ids.token("po"), at, b), True, "no payout.recorded at all")
        pid = self.w.ids.token("po")
        e = appr(pid, at, b)
        rec(pid, at + sec, a)
        self.expect("SOX-SOD", e, True, "recorded 1 s after the approval")
        pid = self.w.ids.token("po")
        rec(pid, at, a)
        self.expect("SOX-SOD", appr(pid, at, b), False, "recorded at the approval's instant")
        pid = self.w.ids.token("po")
        rec(pid, at - timedelta(hours=3), a)
        self.expect("SOX-SOD", appr(pid, at, b), False, "approved twice: first by another person")
        self.expect("SOX-SOD", appr(pid, at + timedelta(hours=1), a), True, "approved twice: then by the recorder")
        pid = self.w.ids.token("po")
        rec(pid, at - timedelta(hours=3), a)
        self.expect("SOX-SOD", appr(pid, at, self.user(self.t2, "finance"), tenant=self.t2), True,
                    "recorded only in another tenant")

    def sox_change(self):
        at = self.as_of - timedelta(days=1, hours=7)
        admin, peer = self.user(role="admin"), self.user(role="security")
        cases = [
            ("financial", {"change_ticket": "CHG-1001", "approved_by": peer["id"]}, False, "ticket and a second approver"),
            ("financial", {"approved_by": peer["id"]}, True, "no change_ticket"),
            ("financial", {"change_ticket": None, "approved_by": peer["id"]}, True, "null change_ticket"),
            ("financial", {"change_ticket": "", "approved_by": peer["id"]}, True, "empty change_ticket"),
            ("security", {"change_ticket": "CHG-1002"}, True, "no approved_by"),
            ("security", {"change_ticket": "CHG-1003", "approved_by": ""}, True, "empty approved_by"),
            ("security", {"change_ticket": "CHG-1004", "approved_by": admin["id"]}, True, "approved by the changer"),
            ("routing", {}, False, "routing change needs no ticket"),
            ("other", {}, False, "other change needs no ticket"),
        ]
        for i, (category, extra, flagged, label) in enumerate(cases):
            e = self.add("config.changed", at + timedelta(minutes=i), actor=admin, setting=SETTINGS[category][0],
                         category=category, old_value="7", new_value="14", **extra)
            self.expect("SOX-CHANGE", e, flagged, f"{category}: {label}")

    def coverage(self):
        """One of each remaining event type, so even a tiny data set has all 20."""
        at = self.as_of - timedelta(hours=5)
        t = self.t1
        who = self.person("FL")
        self.grant(who, at - timedelta(hours=1))
        call = self.call(who, _local(at.date(), 12, 0, 0, "America/New_York"))
        cid = call["data"]["call_id"]
        self.add("bid.placed", at, {"id": who["id"]}, bid_id=self.w.ids.token("bid"), call_id=cid,
                 buyer_id=t.buyers[3], amount="22.75", currency="USD")
        self.add("user.login_failed", at, actor=self.user(role="ops"), method="password", reason="bad_password")
        self.add("access.role_changed", at, actor=self.user(role="admin"),
                 target_user=self.user(role="analyst")["id"], old_role="analyst", new_role="ops")
        self.add("data.exported", at, actor=_svc("auditlake"), export_id=self.w.ids.token("exp"), rows=1200,
                 format="parquet")


# ----------------------------------------------------------------- malformed input

# EVENTS.md's catalog: the `data` fields each type requires, and the types needing a phone.
REQUIRED_DATA = {
    "consent.granted": ("consent_id", "method", "seller"), "consent.revoked": ("method",),
    "dnc.added": ("list",), "dnc.removed": ("list",),
    "call.started": ("call_id", "direction", "purpose", "campaign_id", "publisher_id"),
    "call.completed": ("call_id", "duration_s", "disposition"),
    "bid.placed": ("bid_id", "call_id", "buyer_id", "amount", "currency"),
    "lead.sold": ("call_id", "buyer_id", "price", "currency"), "optout.received": ("via",),
    "payout.recorded": ("payout_id", "call_id", "publisher_id", "amount", "currency"),
    "payout.approved": ("payout_id",),
    "config.changed": ("setting", "category", "old_value", "new_value"),
    "privacy.request_received": ("request_id", "regulation", "kind"),
    "privacy.request_extended": ("request_id",), "privacy.request_completed": ("request_id", "outcome"),
    "transfer.cross_border": ("destination_country", "recipient", "mechanism"),
    "user.login": ("method",), "user.login_failed": ("method", "reason"),
    "access.role_changed": ("target_user", "old_role", "new_role"),
    "data.exported": ("export_id", "rows", "format"),
}
PHONE_REQUIRED = {"consent.granted", "consent.revoked", "dnc.added", "dnc.removed", "call.started"}

BAD_KINDS = ("not_json", "missing_field", "wrong_type", "unknown_type", "bad_uuid", "bad_timestamp", "oversize")
BAD_WEIGHTS = (5, 5, 4, 3, 3, 4, 1)
PARQUET_BAD_KINDS = ("missing_field", "unknown_type", "bad_uuid", "bad_timestamp")


def _break(kind: str, event: dict, rng: random.Random) -> dict | bytes:
    """Turn a fresh, otherwise valid event into one that EVENTS.md must reject."""
    e = event
    if kind == "not_json":
        text = orjson.dumps(e)
        return rng.choice([text[: len(text) // 2], b"<html><body>502 Bad Gateway</body></html>",
                           text.replace(b'"', b"'"), text + b",", b"event_id=" + e["event_id"].encode()])
    if kind == "missing_field":
        variant = rng.randrange(9)
        if variant < 6:
            e.pop(("event_id", "occurred_at", "event_type", "source", "tenant_id", "data")[variant])
        elif variant == 6:
            e["actor"].pop("id")
        elif variant == 7:
            e.pop("actor")
        else:  # a catalog requirement: subject.phone where the type needs it, or a data field
            subject = e.get("subject")
            required = [f for f in REQUIRED_DATA.get(e["event_type"], ()) if f in e["data"]]
            if e["event_type"] in PHONE_REQUIRED and isinstance(subject, dict) and subject.get("phone") \
                    and rng.random() < 0.5:
                subject.pop("phone")
            elif required:
                e["data"].pop(rng.choice(required))
            else:
                e.pop("actor")
        return e
    if kind == "wrong_type":
        variant = rng.randrange(5)
        if variant == 0:
            e["occurred_at"] = 1772460000
        elif variant == 1:
            e["data"] = [e["data"]]
        elif variant == 2:
            e["actor"] = e["actor"]["id"]
        elif variant == 3:
            e["tenant_id"] = 42
        else:
            e["subject"] = "subject-unknown"
        return e
    if kind == "unknown_type":
        e["event_type"] = rng.choice(["call.teleported", "lead.resold", "CALL.STARTED", "payout.reversed"])
        return e
    if kind == "bad_uuid":
        u = e["event_id"]
        e["event_id"] = rng.choice([u.replace("-", ""), u[:-1], "evt-" + u[:8], u[:9] + "zzzz" + u[13:], "12345"])
        return e
    if kind == "bad_timestamp":
        e["occurred_at"] = rng.choice(["2026-02-30T10:00:00Z", "2026-03-02T25:00:00Z", "03/02/2026 14:03:22",
                                       "2026-03-02T14:03:22", "yesterday", "", "2026-13-01T00:00:00Z"])
        return e
    if kind == "oversize":  # valid in every other way; only its size breaks the contract
        e["data"]["transcript"] = "lorem ipsum dolor sit amet " * 2700   # ~72 KiB
        return e
    raise ValueError(kind)


# -------------------------------------------------------------------- the generator

class _Generator:
    def __init__(self, out: Path, events: int, seed: int, days: int, start: date):
        if days < 1:
            raise ValueError("days must be >= 1")
        self.out, self.target, self.seed, self.days = out, max(0, int(events)), seed, days
        self.rng = random.Random(seed)
        self.clock = _Clock()
        self.ids = _Ids(self.rng)
        self.world = _World(self.rng, self.ids, self.clock)
        end = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=days - 1, hours=18)
        while end.weekday() >= 5:   # as_of on a weekday, so business-day deadlines can land on it
            end -= timedelta(days=1)
        self.as_of = end
        self.window_start = min(datetime(start.year, start.month, start.day, tzinfo=UTC), end - timedelta(hours=12))
        self.t0, self.t1 = _us(self.window_start), _us(end)
        self.oracle = Oracle()
        self.malformed: list[dict] = []
        self.replay_pool: list[tuple[str, bytes]] = []              # (file, line) to replay
        self.planted_lines: list[tuple[str, bytes, str]] = []       # (file, line, event_id)
        self.accepted = 0
        self.last_good: dict[str, dict] = {}

    # --- output --------------------------------------------------------------------
    def emit(self, e: dict, planted: bool = False) -> None:
        service = e["source"]
        p = self.landing.part(service)
        if _is_parquet(service):
            self.landing.row(p, e)
        else:
            data = orjson.dumps(e)
            self.landing.line(p, data)
            if planted:
                self.planted_lines.append((p["name"], data, e["event_id"]))
            elif len(self.replay_pool) < 64 and self.rng.random() < 0.01:
                self.replay_pool.append((p["name"], data))
        self.oracle.add(e)
        self.accepted += 1
        self.last_good[service] = e

    def emit_bad(self, kind: str, service: str | None = None) -> None:
        rng = self.rng
        services = sorted(FORMATS)
        service = service or rng.choice(services)
        if _is_parquet(service) and kind not in PARQUET_BAD_KINDS:
            service = rng.choice([s for s in services if not _is_parquet(s)])
        template = self.last_good.get(service)
        if template is None:  # nothing from this producer yet: a routing-engine line will do
            service = "routing-engine"
            template = self.last_good.get(service) or self.world.event(
                "call.completed", self.clock.fmt(rng.randrange(self.t0, self.t1)), self.world.tenants[0].id,
                _svc("routing-engine"), {"id": self.ids.token("sub")},
                {"call_id": self.ids.token("call"), "duration_s": rng.randint(5, 900),
                 "disposition": rng.choice(DISPOSITIONS)})
        # A look-alike of the producer's own lines, with a fresh id, then broken.
        victim = orjson.loads(orjson.dumps(template))
        victim["event_id"] = self.ids.uuid()
        p = self.landing.part(service)
        if _is_parquet(service):
            if kind == "missing_field":   # a null in a required column
                victim["tenant_id"] = None
            else:
                victim = _break(kind, victim, rng)
            line = self.landing.row(p, victim, bad=True)
        else:
            broken = _break(kind, victim, rng)
            data = broken if isinstance(broken, bytes) else orjson.dumps(broken)
            line = self.landing.line(p, data, bad=True)
        self.malformed.append({"file": p["name"], "line": line, "kind": kind})

    # --- the run ---------------------------------------------------------------------
    def run(self) -> dict:
        landing = self.out / "landing"
        landing.mkdir(parents=True, exist_ok=True)
        for old in landing.iterdir():     # a rerun replaces the data set, never mixes two
            if old.is_file() and (old.name.endswith((".jsonl", ".jsonl.gz", ".parquet"))):
                old.unlink()
        self.landing = _Landing(landing, part_lines=max(250, -(-self.target // 12)))

        plan = _Plan(self.world, self.as_of, self.window_start)
        plan.build()
        # Every kind of malformed line at least once (and one bad Parquet row), the rest
        # drawn by weight; about MALFORMED_SHARE of all lines, a fifth of them replays.
        rng = self.rng
        n_replay = max(2, round(self.target * MALFORMED_SHARE * REPLAY_SHARE))
        n_broken = max(len(BAD_KINDS) + 1, round(self.target * MALFORMED_SHARE) - n_replay)
        bad = [(k, None) for k in BAD_KINDS] + [("bad_uuid", "billing-service")]
        bad += [(k, None) for k in rng.choices(BAD_KINDS, BAD_WEIGHTS, k=n_broken - len(bad))]
        oversize = [i for i, (k, _s) in enumerate(bad) if k == "oversize"]
        for i in oversize[MAX_OVERSIZE:]:
            bad[i] = ("not_json", None)
        rng.shuffle(bad)
        background = max(0, self.target - len(plan.events) - n_broken - n_replay)

        # Planted events (in their planned order) and malformed lines go to random
        # positions among the background lines.
        body = background + len(plan.events) + n_broken
        slots = sorted(rng.sample(range(body), len(plan.events) + n_broken))
        bad_slots = set(rng.sample(range(len(slots)), n_broken))
        planted, broken = iter(plan.events), iter(bad)
        schedule = {pos: next(broken) if i in bad_slots else next(planted) for i, pos in enumerate(slots)}

        position = 0

        def flush_scheduled():
            nonlocal position
            while position in schedule:
                item = schedule.pop(position)
                if isinstance(item, dict):
                    self.emit(item, planted=True)
                else:
                    self.emit_bad(*item)
                position += 1

        for event in _Background(self, background).events():
            flush_scheduled()
            self.emit(event)
            position += 1
        flush_scheduled()   # the slots after the last background line
        assert not schedule and position == body
        self._replays(n_replay, plan)
        self.landing.close()
        return self._finish(plan, background)

    def _replays(self, n: int, plan: _Plan) -> None:
        """Exact copies of accepted lines, later in the same file or in a later-sorted one.
        The first copies are of planted violations, so a failed de-duplication shows."""
        rng = self.rng
        flagged = {x["event_id"] for x in plan.expected if x["flagged"]}
        first = [(name, data) for name, data, eid in self.planted_lines if eid in flagged][:2]
        pool = self.replay_pool or [(name, data) for name, data, _e in self.planted_lines]
        jsonl = sorted(name for name, p in self.landing.parts.items() if not p["kind"].startswith("parquet"))
        for i in range(n):
            name, data = first[i] if i < len(first) else rng.choice(pool)
            target = rng.choice([f for f in jsonl if f >= name])
            line = self.landing.line(self.landing.parts[target], data, bad=True)
            self.malformed.append({"file": target, "line": line, "kind": "replay"})

    def _finish(self, plan: _Plan, background: int) -> dict:
        findings = self.oracle.findings(self.as_of)
        quarantine = self.landing.quarantine()
        lines = sum(q["lines"] for q in quarantine.values())
        truth = {
            "seed": self.seed,
            "events": lines,
            "as_of": rfc3339(self.as_of),
            "findings": findings,
            "quarantine": quarantine,
            "accepted": self.accepted,
            "planted": plan.expected,
            "malformed": self.malformed,
        }
        assert lines - sum(q["bad"] for q in quarantine.values()) == self.accepted
        assert self.oracle.latest == self.as_of, "the as_of anchor must be the latest accepted event"
        (self.out / "ground_truth.json").write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2))
        by_rule: dict[str, int] = {}
        for f in findings:
            by_rule[f["rule_id"]] = by_rule.get(f["rule_id"], 0) + 1
        return {
            "out_dir": str(self.out), "landing": str(self.out / "landing"),
            "ground_truth": str(self.out / "ground_truth.json"),
            "seed": self.seed, "events": lines, "accepted": self.accepted,
            "quarantined": lines - self.accepted, "background": background,
            "planted": len(plan.events), "files": len(quarantine), "as_of": truth["as_of"],
            "findings": len(findings), "findings_by_rule": dict(sorted(by_rule.items())),
        }


# ------------------------------------------------------------------- background

class _Background:
    """Compliant-by-construction traffic (with a trickle of organic violations that the
    oracle picks up): each consumer's story is generated in time order, so consent
    precedes calls, and revocations, DNC entries and opt-outs come after the last
    call or sale."""

    P_STAFF = 0.22          # share of stories that are one staff action instead of a consumer
    P_EU = 0.15
    P_LATE_CALL = 0.002     # organic TCPA-HOURS
    P_NO_BASIS = 0.003      # organic GDPR-BASIS on EU events
    P_NO_TICKET = 0.03      # organic SOX-CHANGE

    def __init__(self, gen: _Generator, count: int):
        self.count = count
        self.rng, self.w, self.clock = gen.rng, gen.world, gen.clock
        self.t0, self.t1 = gen.t0, gen.t1
        self.zones: dict[str, zoneinfo.ZoneInfo] = {}
        self._random = gen.rng.random

    # random.randint/randrange draw bits in a loop; scaling one random() is several
    # times faster, and as deterministic. The background makes most of the events.
    def ri(self, a: int, b: int) -> int:
        return a + int(self._random() * (b - a + 1))

    def pick(self, seq):
        return seq[int(self._random() * len(seq))]

    def rr(self, a: int, b: int | None = None) -> int:
        return int(self._random() * a) if b is None else a + int(self._random() * (b - a))

    def events(self):
        made = 0
        while made < self.count:
            story = self.staff() if self.rng.random() < self.P_STAFF else self.consumer()
            for e in story:
                if made >= self.count:
                    return
                yield e
                made += 1

    # --- helpers -----------------------------------------------------------------------
    def when(self, us: int, style: str = "ms", offset: int = 0) -> str:
        return self.clock.fmt(us - us % 1000, style, offset)

    def zone(self, name: str) -> zoneinfo.ZoneInfo:
        z = self.zones.get(name)
        if z is None:
            z = self.zones[name] = zoneinfo.ZoneInfo(name)
        return z

    def call_time(self, after: int, tz: str | None) -> int:
        """A moment after `after` inside calling hours for the person (08:00-21:00 local,
        or the four-zone window 16:30-00:30 UTC when the zone is unknown)."""
        rng = self.rng
        t = after + self.rr(2 * 3600 * US, 5 * DAY_US)
        late = rng.random() < self.P_LATE_CALL
        for _ in range(4):
            if tz is None:
                day = t - t % DAY_US
                cand = day + 16 * 3600 * US + 1800 * US + self.rr(8 * 3600 * US)
            else:
                z = self.zone(tz)
                local = datetime.fromtimestamp(t // US, z)
                if late:
                    hour, minute = self.pick((7, 21)), self.rr(60)
                else:
                    hour, minute = self.rr(9, 20), self.rr(60)
                lt = datetime(local.year, local.month, local.day, hour, minute, self.rr(60), tzinfo=z)
                cand = _us(lt.astimezone(UTC)) + self.rr(1000) * 1000
            if cand > after:
                return cand
            t += DAY_US
        return after + DAY_US * 30  # past the window: the story ends

    # --- stories -------------------------------------------------------------------------
    def consumer(self) -> list[dict]:
        rng, w = self.rng, self.w
        tenant = self.pick(w.tenants)
        eu = rng.random() < self.P_EU
        who = w.eu_person() if eu else w.us_person()
        tz = who.get("timezone")
        basis = "consent" if eu else (self.pick((None, None, "consent")))
        cur = w.currency(who)
        out: list[dict] = []

        def add(event_type, us, subject, data, actor=None, style="ms"):
            if us >= self.t1:
                return None
            b = basis
            if eu and rng.random() < self.P_NO_BASIS:
                b = None
            e = w.event(event_type, self.when(us, style), tenant.id, actor or _svc(SERVICE_OF[event_type]),
                        subject, data, b)
            out.append(e)
            return e

        geo = {"id": who["id"], "country": who["country"], "region": who.get("region")}
        if who["region"] is None:
            geo.pop("region")
        contact = {k: v for k, v in who.items() if k != "email"}
        t = self.t0 + self.rr(max(1, self.t1 - self.t0))
        publisher = self.pick(tenant.publishers)
        if not add("consent.granted", t, dict(who),
                   {"consent_id": w.ids.token("cns"), "method": self.pick(("web_form", "web_form", "ivr", "sms", "verbal")),
                    "seller": publisher, "certificate_id": w.ids.token("cert"),
                    "disclosure_sha256": f"{rng.getrandbits(256):064x}"},
                   actor={"type": "system", "id": f"webform-{publisher}", "ip": w.consumer_ip()}):
            return out
        last = t
        for _ in range(1 + min(6, int(rng.expovariate(0.7)))):
            outbound = rng.random() < 0.65
            purpose = (rng.choices(("telemarketing", "informational", "transactional"), (80, 15, 5))[0] if outbound
                       else self.pick(("telemarketing", "informational")))
            t = self.call_time(last, tz)
            if t >= self.t1:
                break
            call_id = w.ids.token("call")
            offset = 0
            if tz and rng.random() < 0.1:  # some routing nodes write local offsets
                offset = int(datetime.fromtimestamp(t // US, self.zone(tz)).utcoffset() // timedelta(minutes=1))
            e = w.event("call.started", self.when(t, "ms", offset), tenant.id, _svc("routing-engine"), contact,
                        {"call_id": call_id, "direction": "outbound" if outbound else "inbound", "purpose": purpose,
                         "campaign_id": self.pick(tenant.campaigns), "publisher_id": publisher,
                         "buyer_id": self.pick(tenant.buyers)},
                        None if (eu and rng.random() < self.P_NO_BASIS) else basis)
            out.append(e)
            bids = []
            for k in range(self.ri(1, 3)):
                buyer, cents = self.pick(tenant.buyers), self.ri(800, 9000)
                bids.append((cents, buyer))
                add("bid.placed", t + (k + 1) * self.ri(200, 900) * 1000, {"id": who["id"]},
                    {"bid_id": w.ids.token("bid"), "call_id": call_id, "buyer_id": buyer,
                     "amount": _money(cents), "currency": cur})
            duration = int(rng.expovariate(1 / 150))
            end = t + (duration + 5) * US
            add("call.completed", end, {"id": who["id"], "phone": who["phone"]} if rng.random() < 0.3 else {"id": who["id"]},
                {"call_id": call_id, "duration_s": duration, "disposition": self.pick(DISPOSITIONS)})
            last = end
            if duration > 60 and rng.random() < 0.5:
                cents, buyer = max(bids)
                sale = end + self.ri(1, 30) * US
                subject = geo if rng.random() < 0.9 else {"id": who["id"]}
                if add("lead.sold", sale, dict(subject), {"call_id": call_id, "buyer_id": buyer,
                                                          "price": _money(cents), "currency": cur}):
                    last = sale
                    pid = w.ids.token("po")
                    rec = sale + self.ri(600, 6 * 3600) * US
                    if add("payout.recorded", rec, None,
                           {"payout_id": pid, "call_id": call_id, "publisher_id": publisher,
                            "amount": _money(cents * 6 // 10), "currency": cur}, actor=_svc("billing-service")):
                        if rng.random() < 0.9:
                            approver = self.pick([s for s in tenant.staff if s["role"] == "finance"])
                            add("payout.approved", rec + self.ri(3600, 3 * 86400) * US, None, {"payout_id": pid},
                                actor={"type": "user", "id": approver["id"], "role": "finance", "ip": approver["ip"]})
        # The end of the story: nothing after these touches calls or sales.
        after = last + self.ri(3600, 5 * 86400) * US
        roll = rng.random()
        phone_subject = {"id": who["id"], "phone": who["phone"]}
        if roll < 0.04:
            add("consent.revoked", after, phone_subject, {"method": "sms", "keyword": "STOP"})
        elif roll < 0.06:
            add("dnc.added", after, phone_subject, {"list": "internal"})
            if rng.random() < 0.3:
                add("dnc.removed", after + self.ri(1, 10) * DAY_US, phone_subject, {"list": "internal"})
        elif roll < 0.075:
            add("dnc.added", after, phone_subject, {"list": "national"})
            if rng.random() < 0.3:
                add("dnc.removed", after + self.ri(1, 10) * DAY_US, phone_subject, {"list": "national"})
        if not eu and rng.random() < (0.12 if who.get("region") == "CA" else 0.03):
            add("optout.received", after + 60 * US, {"id": who["id"], "email": who["email"]},
                {"via": self.pick(("gpc", "web_form", "email", "phone"))})
        if eu and rng.random() < 0.3:
            dest, mechanism = self.pick(TRANSFERS)
            add("transfer.cross_border", t + self.ri(60, 7200) * US, geo,
                {"destination_country": dest, "recipient": f"{dest.lower()}-analytics", "mechanism": mechanism})
        if rng.random() < 0.02:
            self.privacy_request(add, after + 120 * US, who, eu)
        return out

    def privacy_request(self, add, t: int, who: dict, eu: bool) -> None:
        rng, w = self.rng, self.w
        rid = w.ids.token("req")
        regulation = "gdpr" if eu else "ccpa"
        kind = self.pick(("access", "erasure", "correction", "opt_out") if not eu else ("access", "erasure", "correction"))
        add("privacy.request_received", t, {"id": who["id"], "email": who["email"], "country": who["country"]},
            {"request_id": rid, "regulation": regulation, "kind": kind})
        staff = {"type": "service", "id": "privacy-service"}
        if kind == "opt_out":
            add("privacy.request_completed", t + self.ri(3600, 14 * 86400) * US, None,
                {"request_id": rid, "outcome": "fulfilled"}, actor=staff)
            return
        if rng.random() < 0.1:
            add("privacy.request_extended", t + self.ri(5, 25) * DAY_US, None,
                {"request_id": rid, "reason": "volume of records"}, actor=staff)
            done = t + self.ri(46, 85) * DAY_US
        else:
            done = t + self.ri(3600, 25 * 86400) * US
        outcome = "denied" if rng.random() < 0.05 else "fulfilled"
        data = {"request_id": rid, "outcome": outcome}
        if outcome == "denied":
            data["denial_reason"] = "identity not verified"
        add("privacy.request_completed", done, None, data, actor=staff)

    def staff(self) -> list[dict]:
        rng, w = self.rng, self.w
        tenant = self.pick(w.tenants)
        s = self.pick(tenant.staff)
        actor = {"type": "user", "id": s["id"], "role": s["role"], "ip": s["ip"]}
        t = self.t0 + self.rr(max(1, self.t1 - self.t0))
        roll = rng.random()
        if roll < 0.55:
            kind, data = "user.login", {"method": self.pick(("sso", "sso", "password", "passkey"))}
        elif roll < 0.7:
            kind, data = "user.login_failed", {"method": "password",
                                               "reason": self.pick(("bad_password", "mfa_timeout", "locked"))}
        elif roll < 0.95:
            category = self.pick(("financial", "security", "routing", "routing", "other"))
            data = {"setting": self.pick(SETTINGS[category]), "category": category,
                    "old_value": str(self.ri(1, 50)), "new_value": str(self.ri(1, 50))}
            if category in ("financial", "security"):
                peers = [p for p in tenant.staff if p["id"] != s["id"]]
                if rng.random() >= self.P_NO_TICKET:
                    data["change_ticket"] = f"CHG-{self.ri(1000, 99999)}"
                data["approved_by"] = self.pick(peers)["id"]
            kind = "config.changed"
        elif roll < 0.98:
            target = self.pick(tenant.staff)
            kind, data = "access.role_changed", {"target_user": target["id"], "old_role": target["role"],
                                                 "new_role": self.pick(("analyst", "ops", "finance"))}
        else:
            kind, data = "data.exported", {"export_id": w.ids.token("exp"), "rows": self.ri(10, 500000),
                                           "format": self.pick(("parquet", "csv", "jsonl"))}
            actor = _svc("auditlake")
        return [w.event(kind, self.when(t), tenant.id, actor, None, data)]


def generate(out_dir: str | Path, events: int, seed: int = 0, days: int = 30,
             start: date | None = None) -> dict:
    """Write landing files and ground_truth.json under `out_dir`; return a summary.

    `events` is the number of lines written (when smaller than the planted cases plus
    the minimum of malformed lines, those are written anyway). The window is `days`
    days from `start` (default 2026-02-23, which puts the 2026-03-08 US DST switch
    inside a 30-day window)."""
    # A million short-lived dicts and no reference cycles: the cyclic GC only costs time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Generator(Path(out_dir), events, seed, days, start or DEFAULT_START).run()
    finally:
        if was_enabled:
            gc.enable()
