"""Masking personal data in text that is kept for humans (quarantine raw lines, logs)."""
from __future__ import annotations

import re

import orjson

MASK = "***"
# An e-mail address's parts: anything but space and the characters that delimit it in text,
# JSON or markup, so letters and combining marks of any script (josé.garcía@exämple.es,
# decomposed or not). The same pattern serves RE2 (pyarrow's filter below), whose \s is
# narrower than Python's: it matches a superset there.
_ADDR = r"""[^\s@<>()\[\]{},;:"'`\\/|*=]"""
_LABEL = r"""[^\s@<>()\[\]{},;:"'`\\/|*=.]"""
_EMAIL = rf"{_ADDR}+@{_LABEL}+(?:\.{_LABEL}+)*\.{_LABEL}{{2,}}"
_PATTERNS = [
    # e-mail, tried only where a run of its characters starts: from every position of a long
    # run without "@" the search was quadratic (seconds for one 16 KB line)
    re.compile(rf"(?<!{_ADDR})" + _EMAIL),
    re.compile(r"\+\d[\d ().-]{6,}\d"),  # international phone numbers
    # national numbers: (415)555-0123, (415) 555-0123, 415-555-0123, 415.555.0123 (a bare
    # 123456.7890, an amount, is none)
    re.compile(r"(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b"),
    re.compile(r"(?:\(\d{3}\)[ .-]?|\b\d{3}[ -]?)\d{7}\b"),  # an area code, then seven digits (312 5550186)
    # national numbers with a trunk 0: 07700 900123, 020 7946 0958, 030 12345678, and in pairs
    # with one separator throughout, 01 23 45 67 89 (not a date and time, 05.03.24 14.30)
    re.compile(r"\b0[1-9]\d{1,3}[ -]\d{3,4}[ -]?\d{3,4}\b"),
    re.compile(r"\b0[1-9](?:(?: \d{2}){4}|(?:\.\d{2}){4}|(?:-\d{2}){4})\b"),
    re.compile(r"\b\d{10,15}\b"),  # bare phone-length digit runs
    re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),  # IPv4
    re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){1,7}(?::[0-9A-Fa-f]{1,4}){1,7}\b"),  # IPv6 with "::" (2001:db8::1)
    re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b"),  # IPv6
]
# The keys that name a person's data: the contract's four, their usual spellings, and those
# with a prefix that says whose (customer_name, caller_phone, client_ip). Words, not `\w*`
# around them: that made the search quadratic in a line of one long key, and masked
# campaign_name and hostname too.
_PII_WHOSE = "customer|contact|caller|callee|consumer|user|person|subject|lead|owner|recipient|sender|client|remote"
_PII_WHAT = (r"name|full[-_. ]?name|first[-_. ]?name|last[-_. ]?name|given[-_. ]?name|family[-_. ]?name|"
             r"middle[-_. ]?name|display[-_. ]?name|surname|phone|phone[-_. ]?(?:number|no)|mobile|"
             r"mobile[-_. ]?number|cell|email|e[-_. ]?mail|email[-_. ]?address|ip|ip[-_. ]?address|ip[-_. ]?addr|addr")
# customer_name or customerName, not username (a login such as svc_router): the case of the
# letter after the prefix counts even where the rest is matched ignoring case.
_PII_KEY = rf"(?:(?:{_PII_WHOSE})(?:[_. ]|(?-i:(?=[A-Z]))))?(?:{_PII_WHAT})"
# A PII member, by its key (name, full_name, phone_number, ...), in text that is not parseable
# JSON (a truncated or broken line, a Python repr) or inside a string that holds JSON: the key
# in any quotes, the value in double, single or escaped double quotes (cut off or not), or
# unquoted up to the next separator.
_PII_MEMBER = re.compile(
    # (A match starts where a run of backslashes does: tried from inside one, each start
    # re-scanned the rest of the run, quadratic in a line of backslashes.)
    r"""(?<!\\)((?:\\*["'])\s*""" + _PII_KEY + r"""\s*(?:\\*["'])\s*:\s*)"""
    # An array or object value whole (up to its first closing bracket outside a string):
    # ["John","Smith"] would otherwise keep all but its first element.
    r"""(?:\[(?:[^\]"]|"(?:[^"\\]|\\.)*"?)*\]?|\{(?:[^}"]|"(?:[^"\\]|\\.)*"?)*\}?|"""
    r"""\\+"(?:(?!\\+").)*(?:\\+")?|"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|(?!null\b)[^,}\]\s][^,}\]]*)""",
    re.IGNORECASE | re.DOTALL,
)
_PII_KEY_RE = re.compile(_PII_KEY, re.IGNORECASE)
# A letter written as a \u escape ("n\u0061me"), read as the letter so that _PII_MEMBER sees the key.
_ESCAPED_LETTER = re.compile(r"(?<!\\)\\+u00(4[1-9a-fA-F]|5[0-9aA]|6[1-9a-fA-F]|7[0-9aA])")
_TIME_OF_DAY = re.compile(r"(?<![\w:])\d{1,2}:\d{2}:\d{2}(?:\.\d+)?(?![\w:])")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
RAW_LIMIT = 4096


# Text that mask_text may change (RE2, for pyarrow): the rest is passed over in bulk. RE2 has
# no look-ahead: a key is taken in both spellings here (a filter may match more).
MAY_HOLD_PII = "|".join([_EMAIL] + [p.pattern for p in _PATTERNS[1:]]
                         + [rf"(?i)(?:(?:{_PII_WHOSE})[_. ]?)?(?:{_PII_WHAT})\W*:", r"\\u00"])
# A PII member with its value (a string, an array or a number) in well-formed JSON
# text, for RE2 (DuckDB's regexp_replace): the explorer's events view masks producers'
# `data` with it. RE2 has no look-ahead, so userName is taken as well as user_name.
PII_MEMBER_RE2 = (rf'(?i)("(?:(?:{_PII_WHOSE})[_. ]?)?(?:{_PII_WHAT})"\s*:\s*)'
                  r'("(?:\\.|[^"\\])*"|\[(?:[^\]"]|"(?:\\.|[^"\\])*")*\]|-?[0-9][^,}\]]*)')
# A person's name in free text can only be guessed: two or more capitalised words in a row.
# (No closing \b: after a word that ends in ' or - it failed, and the search backtracked
# through the whole run from every start: quadratic in a line of "X' X' X' ...".)
_CAPITALISED_WORDS = re.compile(r"\b[A-Z][a-z'’-]+(?:[ \t]+[A-Z][a-z'’-]+)+")


def mask_text(text: str, names: bool = False) -> str:
    """Mask e-mails, phone numbers and IPs in free text (UUIDs and timestamps are kept);
    with `names`, also runs of capitalised words (a name in text with no keys to go by)."""
    if names:
        text = _CAPITALISED_WORDS.sub(MASK, text)
    keep: dict[str, str] = {}

    def protect(m: re.Match) -> str:
        token = f"\x00{len(keep)}\x00"
        keep[token] = m.group(0)
        return token

    text = _ESCAPED_LETTER.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = _PII_MEMBER.sub(lambda m: m.group(1) + '"' + MASK + '"', text)
    text = _UUID.sub(protect, text)
    text = re.sub(r"\d{4}-\d{2}-\d{2}[Tt ][\d:.]+([Zz]|[+-]\d{2}:\d{2})?", protect, text)
    text = _TIME_OF_DAY.sub(protect, text)  # 07:30:00 is no IPv6 address
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    for token, original in keep.items():
        text = text.replace(token, original)
    return text


# The members of actor and subject that are not personal data (EVENTS.md); every other one
# is masked in a rejected line.
_NOT_PII = {"actor": frozenset({"type", "id", "role"}), "subject": frozenset({"id", "country", "region", "timezone"})}


def scrub_text(text: str) -> str:
    """mask_text's result where it masked something, else the text byte for byte (mask_text
    also reads escaped letters, \\u0041, as the letters)."""
    masked = mask_text(text)
    return text if masked.count(MASK) == text.count(MASK) else masked


def scrub_json_text(text: str) -> str:
    """A JSON text (a producer's `data`, canonical) with what mask_json masks masked, written
    canonically again (RFC 8785, as the ledger keeps it); the text byte for byte when there
    is nothing to mask; scrub_text's if it is no JSON."""
    from .ledger.canonical import canonical_json

    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return scrub_text(text)
    masked = mask_json(value)
    return text if masked == value else canonical_json(masked).decode()


def mask_json(value):
    """A parsed JSON value (a producer's `data`) with the members whose key names a person's
    data masked whole (customer_name, caller_phone, ...) and PII-shaped text masked in the
    rest, recursively: what mask_text does to the value's JSON text, kept as a value."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: MASK if _PII_KEY_RE.fullmatch(k) and v not in (None, "") else mask_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    return value


def mask_event(ev):
    """A copy of a parsed event with its PII fields masked (for any shape of input)."""
    if not isinstance(ev, dict):
        return ev
    out = dict(ev)
    for part, kept in _NOT_PII.items():
        obj = out.get(part)
        if isinstance(obj, dict):
            # Every member but the contract's non-personal ones: a misspelt " name" or "mobile"
            # in a rejected line holds the same data.
            out[part] = {k: (v if k in kept or v is None or v == "" else MASK) for k, v in obj.items()}
        elif obj is not None:  # a string, list or number where an object belongs: whole
            out[part] = MASK
    return out



def mask_raw(raw: bytes | dict) -> str:
    """The masked, size-limited text of a rejected landing line or Parquet row."""
    if isinstance(raw, dict):
        try:
            text = orjson.dumps(mask_event(raw), default=str).decode()
        except TypeError:
            text = str(mask_event(raw))
    else:
        head = raw[: RAW_LIMIT * 4]
        try:
            # (A name given twice shows once, its last value, masked by its key like any other.)
            text = orjson.dumps(mask_event(orjson.loads(head))).decode() if len(raw) <= RAW_LIMIT * 4 else None
        except (orjson.JSONDecodeError, TypeError):  # TypeError: nested deeper than dumps goes
            text = None
        if text is None:  # not JSON: no keys to go by, so names are guessed as well
            text = head.decode("utf-8", errors="replace")
            text = mask_text(text, names=True)
    text = mask_text(text)
    if len(text) <= RAW_LIMIT and (isinstance(raw, dict) or len(raw) <= RAW_LIMIT * 4):
        return text
    size = f"{len(text)} characters" if isinstance(raw, dict) else f"{getattr(raw, 'length', len(raw))} bytes"
    return text[:RAW_LIMIT] + f"... [cut; the whole line has {size}]"


def may_hold_pii(values):
    """Per value of a pyarrow string array, whether mask_text may change it (a superset):
    MAY_HOLD_PII, or any digit in text that is not ASCII (RE2's \\d and \\b are ASCII, while
    the masker reads a phone number written in any script's digits)."""
    import pyarrow.compute as pc

    other_script_digits = pc.and_(pc.invert(pc.string_is_ascii(values)), pc.match_substring_regex(values, r"\p{Nd}"))
    return pc.or_(pc.match_substring_regex(values, MAY_HOLD_PII), other_script_digits).fill_null(False)


def _mask_strings(col):
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.cast(pa.string())
    if not pc.any(may_hold_pii(col)).as_py():
        return col
    return pa.chunked_array([pa.array([None if v is None else mask_text(v) for v in col.to_pylist()], pa.string())])


def mask_table(table):
    """A query result (pyarrow Table) with PII-shaped text masked in every column that
    holds text; nested and binary values are shown as their text, masked. For results a
    person reads (the explorer's SQL console): what producers put in `data` is kept as
    written in the ledger, so it is masked on the way out."""
    import pyarrow as pa

    cols = []
    for col in table.columns:
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            col = _mask_strings(col)
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            col = _mask_strings(pa.array([None if v is None else v.decode("utf-8", "replace") for v in col.to_pylist()],
                                         pa.string()))
        elif pa.types.is_nested(t):
            col = _mask_strings(pa.array([None if v is None else orjson.dumps(v, default=str).decode()
                                          for v in col.to_pylist()], pa.string()))
        cols.append(col)
    return pa.table(cols, names=table.column_names)


# Controls, line separators, and the invisible format characters (bidirectional overrides
# and isolates, zero-width marks, the BOM, tag characters) that make text read as other text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064"
                      "\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]")


def escape_controls(text: str) -> str:
    """Control and invisible format characters escaped (`\\n`, `\\x1b`, `\\u202e`): text
    from producers or from the lake's file names stays one line, no terminal escape, and
    reads as what it is (a right-to-left override cannot make one id look like another)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)

