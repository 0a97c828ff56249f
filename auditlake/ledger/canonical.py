"""RFC 8785 (JCS) canonical JSON.

orjson with sorted keys already emits JCS for strings, integers, booleans and null
(minimal escapes, UTF-8, lowercase \\u00xx); it differs only for floats, for integers
beyond IEEE-754's exact range and for key order outside the BMP. Those rare values take
the reference implementation (`rfc8785`), so the output is always JCS.
"""
from __future__ import annotations

import json
import re

import orjson
import rfc8785

from .. import _records

MAX_EXACT_INT = 2**53 - 1
_PLAIN = frozenset({str, bool, type(None)})


class CanonicalError(ValueError):
    """The value has no RFC 8785 form (NaN, out-of-range integer, lone surrogate...)."""


def _needs_reference(value) -> bool:
    """True if orjson's text of `value` may not be JCS: it holds a float, an integer beyond
    2^53 or a key outside ASCII."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not "".join(v).isascii():
                return True
            # The usual object (strings, booleans, nulls) is settled without a walk.
            if not _PLAIN.issuperset(map(type, v.values())):
                stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float):
            return True
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_EXACT_INT:
            return True
    return False


def canonical_json(value) -> bytes:
    """The JCS bytes of a JSON value (dict/list/str/int/float/bool/None)."""
    return canonical_json_noting_rare(value)[0]


def canonical_json_noting_rare(value) -> tuple[bytes, bool]:
    """canonical_json, and whether the value holds a rare one (a float, an integer beyond
    2^53, a key outside ASCII) that the reference implementation encoded."""
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:
        out = None  # an integer beyond 2^53 (or no JSON at all): the reference decides
    try:
        if out is None or _needs_reference(value):
            return rfc8785.dumps(value), True
        return out, False
    except (rfc8785.CanonicalizationError, orjson.JSONEncodeError, TypeError) as exc:
        raise CanonicalError(str(exc)) from exc


# orjson reads an integer literal beyond 64 bits as a float, silently changing it; a text
# with such a literal is read again with every integer exact.
_LONG_INTEGER = re.compile(rb"\d{20,}")


def may_hold_long_integer(text: bytes) -> bool:
    return _LONG_INTEGER.search(text) is not None


def loads_exact(text: bytes | str):
    """JSON text read with every integer exact (the json module keeps big integers)."""
    def no_constant(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constant)


def fragment(canonical: bytes | str) -> orjson.Fragment:
    """Embed already-canonical JSON inside a larger document without re-encoding it."""
    return orjson.Fragment(canonical)


def canonical_with_fragments(obj: dict) -> bytes:
    """JCS of a dict whose keys are ASCII and whose values are plain strings, ints, None,
    dicts of those, or `fragment`s of canonical JSON. Used for the ledger record."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def loads_noting_repeats(text: str | bytes) -> tuple[object, list[str]]:
    """json.loads, and the object keys the text gives more than once: a signature covers one
    reading of such a text (the last value), another reader may take the first."""
    repeated: list[str] = []

    def pairs_to_dict(pairs: list[tuple]) -> dict:
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                repeated.append(k)
            seen.add(k)
        return dict(pairs)

    return json.loads(text, object_pairs_hook=pairs_to_dict), repeated


def repeated_name(text: bytes) -> str | None:
    """A member name that occurs twice in one object of this JSON text (which parsed), else
    None. The sealed form is RFC 8785, which takes I-JSON (RFC 7493): each name once; a
    reader that keeps the first of two names and one that keeps the last (as orjson does)
    would see two different events in one line. Compared byte for byte in C; a text with a
    name spelled with an escape ("\\u0061" is "a") is decoded first."""
    found = _records.repeated_name(text)
    if found is not True:
        return None if found is None else found.decode(errors="replace")
    try:
        return next(iter(loads_noting_repeats(text)[1]), None)
    except RecursionError:  # deeper than the json module goes (orjson goes to 1024): not told apart
        return "(a name nested too deeply to compare)"
