"""RFC 8785 (JCS) vectors: the fast path and the reference path must both produce them."""
import math
import struct

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from auditlake.ledger.canonical import CanonicalError, canonical_json


def test_rfc8785_section_3_2_3_example():
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    assert canonical_json(value) == (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()


def test_rfc8785_sorting_by_utf16_code_units():
    value = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
             "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
             "\u00f6": "Latin Small Letter O With Diaeresis"}
    keys = [k for k in __import__("json").loads(canonical_json(value))]
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


NUMBERS = {  # RFC 8785 appendix B: IEEE-754 bits -> JCS text
    0x0000000000000000: "0", 0x8000000000000000: "0", 0x0000000000000001: "5e-324",
    0x8000000000000001: "-5e-324", 0x7FEFFFFFFFFFFFFF: "1.7976931348623157e+308",
    0xFFEFFFFFFFFFFFFF: "-1.7976931348623157e+308", 0x4340000000000000: "9007199254740992",
    0xC340000000000000: "-9007199254740992", 0x4430000000000000: "295147905179352830000",
    0x44B52D02C7E14AF5: "9.999999999999997e+22", 0x44B52D02C7E14AF6: "1e+23",
    0x44B52D02C7E14AF7: "1.0000000000000001e+23", 0x444B1AE4D6E2EF4E: "999999999999999700000",
    0x444B1AE4D6E2EF4F: "999999999999999900000", 0x444B1AE4D6E2EF50: "1e+21",
    0x3EB0C6F7A0B5ED8C: "9.999999999999997e-7", 0x3EB0C6F7A0B5ED8D: "0.000001",
    0x41B3DE4355555553: "333333333.3333332", 0x41B3DE4355555554: "333333333.33333325",
    0x41B3DE4355555555: "333333333.3333333", 0x41B3DE4355555556: "333333333.3333334",
    0x41B3DE4355555557: "333333333.33333343", 0xBECBF647612F3696: "-0.0000033333333333333333",
    0x43143FF3C1CB0959: "1424953923781206.2",
}


@pytest.mark.parametrize("bits,text", NUMBERS.items())
def test_rfc8785_number_serialisation(bits, text):
    value = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    assert canonical_json([value]) == f"[{text}]".encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**53 + 1, -(2**60)])
def test_values_without_a_canonical_form_are_refused(bad):
    with pytest.raises(CanonicalError):
        canonical_json({"x": bad})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_fast_path_equals_reference_implementation(value):
    assert canonical_json(value) == rfc8785.dumps(value)


# ---------------------------------------------------------------- names given twice (I-JSON)
def _text(node, escape) -> str:
    """JSON text of a tree whose objects are lists of (name, value) pairs (names may repeat);
    escape(name) spells a name, perhaps with \\u escapes."""
    import json

    if isinstance(node, tuple):
        return "{" + ", ".join(f"{escape(k)} :{_text(v, escape)}" for k, v in node[0]) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_text(v, escape) for v in node) + "]"
    return json.dumps(node)


def _has_repeat(node) -> bool:
    if isinstance(node, tuple):
        names = [k for k, _ in node[0]]
        return len(set(names)) < len(names) or any(_has_repeat(v) for _, v in node[0])
    return isinstance(node, list) and any(_has_repeat(v) for v in node)


_names = st.sampled_from(["a", "b", "ab", "", 'q"', "x\\", "\u00e9", ":"])
_trees = st.recursive(
    st.one_of(st.none(), st.integers(-5, 5), _names),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.lists(st.tuples(_names, inner), max_size=5).map(lambda pairs: (pairs,))),
    max_leaves=20)


@given(tree=_trees, escaped=st.booleans())
def test_a_name_given_twice_in_one_object_is_found_whatever_its_spelling(tree, escaped):
    import json

    from auditlake.ledger.canonical import repeated_name

    escape = (lambda k: '"' + "".join(f"\\u{ord(c):04x}" for c in k) + '"') if escaped else json.dumps
    text = _text(tree, escape).encode()
    json.loads(text)  # the tree's text is JSON
    assert (repeated_name(text) is not None) == _has_repeat(tree), text


@pytest.mark.parametrize("text", [b"[" * 100_000, b'{"":' * 50_000, b'"' + b"\\" * 9, b'{"a":1,"a"', b"}]}]", b""])
def test_the_repeated_name_scan_survives_any_bytes(text):
    """The C scan is only asked about texts that parsed, but never reads past any input."""
    from auditlake import _records

    assert _records.repeated_name(text) in (None, True) or isinstance(_records.repeated_name(text), bytes)


def test_a_name_repeated_among_many_in_one_object_is_found():
    from auditlake.ledger.canonical import repeated_name

    names = [f'"k{i}":{i}' for i in range(20_000)]
    assert repeated_name(("{" + ",".join(names) + "}").encode()) is None
    assert repeated_name(("{" + ",".join(names + ['"k7":0']) + "}").encode()) == "k7"
