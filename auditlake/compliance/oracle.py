"""A plain row-by-row transcription of RULES.md, independent of the vectorised engine.

It reads events in their landing (envelope) form, with plain PII, and joins phones on
the plain `(tenant_id, subject.phone)`, which is equivalent to the lake's blind index.
It is the generator's source of ground truth and the tests' reference for
`rules.evaluate`; it favours being obviously right over being fast, but stays linear
enough for a million events.

Decisions where RULES.md is terse (the same ones the engine makes):
- a consent/DNC revocation at the same instant as a grant/removal counts as later;
  any consent/DNC event at the call's own instant is "at or before" the call;
- TCPA-REVOKED and internal TCPA-DNC count 10 business days from the time of that
  latest revocation/addition itself (a repeated STOP restarts the clock);
- national TCPA-DNC: no consent event at all is "not a consent.granted";
- a missing, empty or unknown time-zone name gets the four-US-zone check;
- extensions and completions match a privacy request by `request_id` only; the earliest
  completion counts, whenever it is; "before the first deadline" is strict; `as_of`
  only decides requests that have no completion;
- an event key (phone, request_id, payout_id, subject id) that is null matches nothing;
- for CCPA-SALE, a sale lacking country or region takes, field by field, the latest
  non-null value from an event of the same (tenant, subject) at or before it, later
  ledger position winning at one instant.
"""
from __future__ import annotations

import calendar
import zoneinfo
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterable

UTC = timezone.utc

EEA_STATES = {
    # the 27 EU member states
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    # plus the EEA EFTA states
    "IS", "LI", "NO",
}
ADEQUACY_LIST = {"AD", "AR", "CA", "CH", "FO", "GB", "GG", "IL", "IM", "JE", "JP", "KR", "NZ", "US", "UY"}
FOUR_US_ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]
PII_FIELDS = [("actor", "ip"), ("subject", "email"), ("subject", "name"), ("subject", "phone")]

REVOCATIONS = {"consent.revoked", "dnc.added"}


# ------------------------------------------------------------------- small helpers

def parse_instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(value.replace("z", "Z")).astimezone(UTC)


def business_days_after(t: datetime, n: int, holidays) -> datetime:
    day = t
    left = n
    while left > 0:
        day = day + timedelta(days=1)
        is_weekday = day.isoweekday() <= 5
        if is_weekday and day.date() not in holidays:
            left -= 1
    return day


def months_after(t: datetime, n: int) -> datetime:
    month_index = t.year * 12 + (t.month - 1) + n
    year, month = month_index // 12, month_index % 12 + 1
    last_day = calendar.monthrange(year, month)[1]
    return t.replace(year=year, month=month, day=min(t.day, last_day))


@lru_cache(maxsize=1)
def known_zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_valid_zone(name: Any) -> bool:
    # "Factory" (no zone configured) and "localtime" (a system link) are not real zones.
    if not isinstance(name, str) or name in ("", "Factory", "localtime"):
        return False
    if name not in known_zone_names():
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except Exception:  # noqa: BLE001
        return False
    return True


def inside_calling_hours(t: datetime, zone: str) -> bool:
    wall_clock = t.astimezone(zoneinfo.ZoneInfo(zone)).time()
    return time(8, 0) <= wall_clock < time(21, 0)


def present(value: Any) -> bool:
    """RULES.md's "missing" is: absent, null or empty string."""
    return value is not None and value != ""


# ----------------------------------------------------------------------- the oracle

class Oracle:
    """Feed events with `add` (in ledger order), then ask for `findings`."""

    def __init__(self, holidays: Iterable[date] = frozenset()):
        self.holidays = frozenset(holidays)
        self.position = 0
        self.latest: datetime | None = None
        self.immediate: list[tuple[str, str, datetime]] = []   # rules decided per event
        self.calls = []                      # outbound telemarketing calls
        self.consent_log = defaultdict(list)  # (tenant, phone) -> [(t, type)]
        self.dnc_log = defaultdict(list)      # (tenant, phone, list) -> [(t, type)]
        self.requests = []                    # privacy.request_received
        self.extended = defaultdict(list)     # request_id -> [t]
        self.completed = defaultdict(list)    # request_id -> [t]
        self.sales = []
        self.optouts = defaultdict(list)      # (tenant, subject id) -> [t]
        self.subject_geo = defaultdict(list)  # (tenant, subject id) -> [(t, pos, country, region)]
        self.recorded = defaultdict(list)     # (tenant, payout_id) -> [(t, actor id)]
        self.approvals = []

    def add(self, event: dict) -> None:
        self.position += 1
        t = parse_instant(event["occurred_at"])
        if self.latest is None or t > self.latest:
            self.latest = t
        kind = event["event_type"]
        eid = event["event_id"]
        tenant = event.get("tenant_id")
        actor = event.get("actor") or {}
        subject = event.get("subject") or {}
        data = event.get("data") or {}
        country = subject.get("country")
        phone = subject.get("phone") or None
        sid = subject.get("id")

        # GDPR-BASIS: an EEA subject, some non-empty PII, no lawful basis.
        if country in EEA_STATES and not present(event.get("lawful_basis")):
            carries_pii = any(present((actor if part == "actor" else subject).get(name))
                              for part, name in PII_FIELDS)
            if carries_pii:
                self.immediate.append(("GDPR-BASIS", eid, t))

        if sid is not None and (country is not None or subject.get("region") is not None):
            self.subject_geo[(tenant, sid)].append((t, self.position, country, subject.get("region")))

        if kind in ("consent.granted", "consent.revoked") and phone:
            self.consent_log[(tenant, phone)].append((t, kind))
        elif kind in ("dnc.added", "dnc.removed") and phone:
            if data.get("list") in ("internal", "national"):
                self.dnc_log[(tenant, phone, data["list"])].append((t, kind))
        elif kind == "call.started":
            if data.get("direction") == "outbound" and data.get("purpose") == "telemarketing":
                self.calls.append(dict(event_id=eid, t=t, tenant=tenant, phone=phone,
                                       zone=subject.get("timezone")))
        elif kind == "transfer.cross_border":
            dest, mechanism = data.get("destination_country"), data.get("mechanism")
            if country in EEA_STATES and dest not in EEA_STATES:
                if mechanism == "none" or (mechanism == "adequacy" and dest not in ADEQUACY_LIST):
                    self.immediate.append(("GDPR-TRANSFER", eid, t))
        elif kind == "privacy.request_received":
            self.requests.append(dict(event_id=eid, t=t, request_id=data.get("request_id"),
                                      regulation=data.get("regulation"), kind=data.get("kind")))
        elif kind == "privacy.request_extended":
            if data.get("request_id") is not None:
                self.extended[data["request_id"]].append(t)
        elif kind == "privacy.request_completed":
            if data.get("request_id") is not None:
                self.completed[data["request_id"]].append(t)
        elif kind == "lead.sold":
            self.sales.append(dict(event_id=eid, t=t, tenant=tenant, subject_id=sid,
                                   country=country, region=subject.get("region")))
        elif kind == "optout.received":
            if sid is not None:
                self.optouts[(tenant, sid)].append(t)
        elif kind == "payout.recorded":
            if data.get("payout_id") is not None:
                self.recorded[(tenant, data["payout_id"])].append((t, actor.get("id")))
        elif kind == "payout.approved":
            self.approvals.append(dict(event_id=eid, t=t, tenant=tenant,
                                       payout_id=data.get("payout_id"), approver=actor.get("id")))
        elif kind == "config.changed":
            if data.get("category") in ("financial", "security"):
                ticket, approver = data.get("change_ticket"), data.get("approved_by")
                if not present(ticket) or not present(approver) or approver == actor.get("id"):
                    self.immediate.append(("SOX-CHANGE", eid, t))

    # ------------------------------------------------------------------- judging

    def findings(self, as_of: datetime | None = None) -> list[dict]:
        as_of = self.latest if as_of is None else parse_instant(as_of)
        found = list(self.immediate)
        for call in self.calls:
            found += [(rule, call["event_id"], call["t"]) for rule in self._judge_call(call)]
        for request in self.requests:
            rule = self._judge_request(request, as_of)
            if rule:
                found.append((rule, request["event_id"], request["t"]))
        for sale in self.sales:
            if self._sale_after_optout(sale):
                found.append(("CCPA-SALE", sale["event_id"], sale["t"]))
        for approval in self.approvals:
            if self._approval_lacks_separation(approval):
                found.append(("SOX-SOD", approval["event_id"], approval["t"]))
        unique = {(rule, eid): t for rule, eid, t in found}
        ordered = sorted(unique.items(), key=lambda item: (item[0][0], item[1], item[0][1]))
        return [{"rule_id": rule, "event_id": eid} for (rule, eid), _ in ordered]

    @staticmethod
    def _latest_at_or_before(log: list[tuple[datetime, str]], t: datetime):
        """The latest (time, type) at or before t; at one instant a revocation is later."""
        candidates = [entry for entry in log if entry[0] <= t]
        if not candidates:
            return None
        return max(candidates, key=lambda entry: (entry[0], entry[1] in REVOCATIONS))

    def _judge_call(self, call: dict) -> list[str]:
        rules = []
        t, zone = call["t"], call["zone"]
        if is_valid_zone(zone):
            if not inside_calling_hours(t, zone):
                rules.append("TCPA-HOURS")
        elif not all(inside_calling_hours(t, z) for z in FOUR_US_ZONES):
            rules.append("TCPA-HOURS")

        if call["phone"] is None:
            consents, internal, national = [], [], []
        else:
            key = (call["tenant"], call["phone"])
            consents = self.consent_log.get(key, [])
            internal = self.dnc_log.get(key + ("internal",), [])
            national = self.dnc_log.get(key + ("national",), [])

        granted_before = any(kind == "consent.granted" and when <= t for when, kind in consents)
        if not granted_before:
            rules.append("TCPA-CONSENT")

        last_consent = self._latest_at_or_before(consents, t)
        if last_consent and last_consent[1] == "consent.revoked":
            if t > business_days_after(last_consent[0], 10, self.holidays):
                rules.append("TCPA-REVOKED")

        last_internal = self._latest_at_or_before(internal, t)
        last_national = self._latest_at_or_before(national, t)
        internal_violation = (last_internal is not None and last_internal[1] == "dnc.added"
                              and t > business_days_after(last_internal[0], 10, self.holidays))
        national_violation = (last_national is not None and last_national[1] == "dnc.added"
                              and (last_consent is None or last_consent[1] != "consent.granted"))
        if internal_violation or national_violation:
            rules.append("TCPA-DNC")
        return rules

    def _judge_request(self, request: dict, as_of: datetime | None) -> str | None:
        received, rid = request["t"], request["request_id"]
        extensions = self.extended.get(rid, []) if rid is not None else []
        completions = self.completed.get(rid, []) if rid is not None else []
        if request["regulation"] == "gdpr":
            rule = "GDPR-LATE"
            first_deadline = months_after(received, 1)
            if any(e < first_deadline for e in extensions):
                deadline = months_after(received, 3)
            else:
                deadline = first_deadline
        elif request["regulation"] == "ccpa":
            rule = "CCPA-LATE"
            if request["kind"] == "opt_out":
                deadline = business_days_after(received, 15, self.holidays)
            else:
                first_deadline = received + timedelta(hours=45 * 24)
                if any(e < first_deadline for e in extensions):
                    deadline = received + timedelta(hours=90 * 24)
                else:
                    deadline = first_deadline
        else:
            return None
        if completions:
            late = min(completions) > deadline
        else:
            late = as_of is not None and as_of > deadline
        return rule if late else None

    def _sale_after_optout(self, sale: dict) -> bool:
        country, region = sale["country"], sale["region"]
        key = (sale["tenant"], sale["subject_id"])
        if (country is None or region is None) and sale["subject_id"] is not None:
            history = sorted(entry for entry in self.subject_geo.get(key, []) if entry[0] <= sale["t"])
            if country is None:
                known = [entry[2] for entry in history if entry[2] is not None]
                country = known[-1] if known else None
            if region is None:
                known = [entry[3] for entry in history if entry[3] is not None]
                region = known[-1] if known else None
        if country != "US" or region != "CA" or sale["subject_id"] is None:
            return False
        optouts_before = [t for t in self.optouts.get(key, []) if t <= sale["t"]]
        if not optouts_before:
            return False
        return sale["t"] > business_days_after(min(optouts_before), 15, self.holidays)

    def _approval_lacks_separation(self, approval: dict) -> bool:
        if approval["payout_id"] is None:
            return True
        records = [(t, who) for t, who in self.recorded.get((approval["tenant"], approval["payout_id"]), [])
                   if t <= approval["t"]]
        if not records:
            return True
        return any(who is not None and who == approval["approver"] for _, who in records)


def evaluate(events: Iterable[dict], as_of: datetime | None = None,
             holidays: Iterable[date] = frozenset()) -> list[dict]:
    """Findings `[{"rule_id", "event_id"}]` of RULES.md on envelope-form events given in
    ledger order, sorted by rule_id, occurred_at, event_id."""
    oracle = Oracle(holidays)
    for event in events:
        oracle.add(event)
    return oracle.findings(as_of)
