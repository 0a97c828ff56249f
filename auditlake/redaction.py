"""Redaction profiles for exports: per field, `keep`, `mask`, `hash` or `drop`.

Profiles live in a TOML file (`auditlake export --profiles FILE`), merged over the built-in
ones below:

    [profiles.partner]
    description = "What a partner may see"
    default_action = "keep"          # for fields not listed (never applies to PII fields)
    hash_salt = "export"             # "export": a fresh key per export (hashes do not link
                                     # across exports); "profile": a key derived from the
                                     # lake's keystore and the profile name (stable)
    [profiles.partner.fields]
    "subject.id" = "hash"
    "actor.ip" = "drop"
    data = "drop"

Field names are the export's columns, written with a dot or an underscore
(`subject.phone` or `subject_phone`). Actions:

* keep: the value as is; for a PII field the decrypted value, which is allowed only in a
  privileged export that names a reason (`--reveal-reason`), itself logged;
* scrub: the value with PII-shaped text masked (e-mail addresses, phone numbers, IP
  addresses), and in `data` also the members whose key names a person's data
  (`customer_email`, `caller_phone`): what producers write beyond the contract's four PII
  fields is kept in the ledger as written, and this is how the explorer shows it; text
  with nothing to mask is exported byte for byte (not for PII fields, times or `seq`);
* mask: `***` where the event has a value (`[erased]` for an erased person's PII);
* hash: `h1.` + HMAC-SHA-256 hex of the value under the profile's hash key (PII is hashed
  from its decrypted value, `[erased]` once erased), so equal values stay joinable;
* drop: the column is left out.

PII fields (`subject.phone`, `subject.email`, `subject.name`, `actor.ip`) that a profile does
not list are masked: no profile releases personal data by omission, and the built-in
`default` profile releases it only in a privileged export, which names its reason
(`--reveal-reason`, logged; export.build_export).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AuditlakeError

ACTIONS = ("keep", "scrub", "mask", "hash", "drop")
# Export columns, in their canonical (sorted) order.
COLUMNS = sorted([
    "seq", "event_id", "event_type", "occurred_at", "ingested_at", "source", "tenant_id",
    "actor_type", "actor_id", "actor_role", "actor_ip",
    "subject_id", "subject_country", "subject_region", "subject_timezone",
    "subject_phone", "subject_email", "subject_name",
    "lawful_basis", "pii_fields", "data",
])
PII_COLUMNS = ("actor_ip", "subject_email", "subject_name", "subject_phone")
PII_FIELD = {"actor_ip": "actor.ip", "subject_email": "subject.email", "subject_name": "subject.name",
             "subject_phone": "subject.phone"}
INT_COLUMNS = ("seq",)  # only keep or drop
NOT_SCRUBBED = (*PII_COLUMNS, *INT_COLUMNS, "occurred_at", "ingested_at")  # sealed, or no free text
MASK = "***"

BUILTIN_TOML = """
[profiles.default]
description = "Operational export: every field kept except personal data, which is masked (PII-shaped text in data and ids too)."
default_action = "keep"
[profiles.default.fields]
data = "scrub"
"actor.id" = "scrub"
"subject.id" = "scrub"
"subject.phone" = "mask"
"subject.email" = "mask"
"subject.name" = "mask"
"actor.ip" = "mask"

[profiles.pseudonymous]
description = "Analytics: people and users replaced by keyed hashes, personal data dropped."
default_action = "keep"
hash_salt = "profile"
[profiles.pseudonymous.fields]
data = "scrub"
"subject.id" = "hash"
"actor.id" = "hash"
"subject.phone" = "drop"
"subject.email" = "drop"
"subject.name" = "drop"
"actor.ip" = "drop"

[profiles.minimal]
description = "Counting only: what happened, when and for which tenant."
default_action = "drop"
[profiles.minimal.fields]
seq = "keep"
event_id = "keep"
event_type = "keep"
occurred_at = "keep"
tenant_id = "keep"
"subject.phone" = "drop"
"subject.email" = "drop"
"subject.name" = "drop"
"actor.ip" = "drop"

[profiles.privileged]
description = "Privileged: personal data decrypted. Needs --reveal-reason, which is logged."
default_action = "keep"
[profiles.privileged.fields]
"subject.phone" = "keep"
"subject.email" = "keep"
"subject.name" = "keep"
"actor.ip" = "keep"
"""


@dataclass(frozen=True)
class Profile:
    name: str
    actions: dict[str, str]  # every column -> action
    description: str = ""
    hash_salt: str = "export"
    source: str = "built-in"
    extra: dict = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """The exported columns, in canonical (sorted) order."""
        return [c for c in COLUMNS if self.actions[c] != "drop"]

    @property
    def reveals_pii(self) -> bool:
        return any(self.actions[c] == "keep" for c in PII_COLUMNS)

    @property
    def needs_pii(self) -> bool:
        """Does applying it need decrypted PII (keep or hash of a PII field)?"""
        return any(self.actions[c] in ("keep", "hash") for c in PII_COLUMNS)

    def revealing(self) -> "Profile":
        """This profile with every PII field kept (a privileged export of it)."""
        actions = dict(self.actions)
        for c in PII_COLUMNS:
            actions[c] = "keep"
        return Profile(self.name, actions, self.description, self.hash_salt, self.source)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "hash_salt": self.hash_salt,
                "source": self.source, "fields": {c: self.actions[c] for c in COLUMNS}}


def _column(name: str) -> str:
    col = str(name).strip().replace(".", "_")
    if col not in COLUMNS:
        raise AuditlakeError(f"unknown field {name!r} in a redaction profile (fields: {', '.join(COLUMNS)})")
    return col


def _build(name: str, spec: dict, source: str) -> Profile:
    if not isinstance(spec, dict):
        raise AuditlakeError(f"redaction profile {name!r} in {source} is not a table")
    unknown = set(spec) - {"description", "default_action", "hash_salt", "fields"}
    if unknown:
        raise AuditlakeError(f"redaction profile {name!r} in {source}: unknown key(s) {', '.join(sorted(unknown))}")
    default = spec.get("default_action", "keep")
    if default not in ("keep", "mask", "hash", "drop"):
        raise AuditlakeError(f"redaction profile {name!r}: default_action must be one of keep, mask, hash, drop")
    salt = spec.get("hash_salt", "export")
    if salt not in ("export", "profile"):
        raise AuditlakeError(f"redaction profile {name!r}: hash_salt must be 'export' or 'profile'")
    fields = spec.get("fields", {})
    if not isinstance(fields, dict):
        raise AuditlakeError(f"redaction profile {name!r}: fields must be a table")
    actions = {c: ("mask" if c in PII_COLUMNS else default) for c in COLUMNS}
    for k, v in fields.items():
        col = _column(k)
        if v not in ACTIONS:
            raise AuditlakeError(f"redaction profile {name!r}: {k} = {v!r} is not one of {', '.join(ACTIONS)}")
        if col in INT_COLUMNS and v not in ("keep", "drop"):
            raise AuditlakeError(f"redaction profile {name!r}: {k} can only be kept or dropped")
        if col in NOT_SCRUBBED and v == "scrub":
            raise AuditlakeError(f"redaction profile {name!r}: {k} cannot be scrubbed (only free text can)")
        actions[col] = v
    for c in INT_COLUMNS:
        if actions[c] not in ("keep", "drop"):
            actions[c] = "keep" if default != "drop" else "drop"
    if all(a == "drop" for a in actions.values()):
        raise AuditlakeError(f"redaction profile {name!r} drops every field")
    return Profile(name, actions, str(spec.get("description", "")), salt, source)


def _parse(text: str, source: str) -> dict[str, Profile]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AuditlakeError(f"{source} is not valid TOML: {exc}") from exc
    profiles = doc.get("profiles")
    if not isinstance(profiles, dict):
        raise AuditlakeError(f"{source} has no [profiles.NAME] tables")
    return {name: _build(name, spec, source) for name, spec in profiles.items()}


def builtin_profiles() -> dict[str, Profile]:
    return _parse(BUILTIN_TOML, "built-in")


def load_profiles(path: str | None = None) -> dict[str, Profile]:
    """The built-in profiles, overlaid with the file's (a file may redefine any of them,
    `default` included; PII stays masked unless a profile keeps it and a reason is given)."""
    profiles = builtin_profiles()
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditlakeError(f"cannot read the redaction profiles file {path}: {exc}") from exc
        profiles.update(_parse(text, str(path)))
    return profiles


def load_profile(name: str = "default", path: str | None = None) -> Profile:
    profiles = load_profiles(path)
    if name not in profiles:
        raise AuditlakeError(f"no redaction profile {name!r} (profiles: {', '.join(sorted(profiles))})")
    return profiles[name]
