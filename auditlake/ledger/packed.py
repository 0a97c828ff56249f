"""Arrow arrays as the buffers the C helpers read: (data, offsets) for the batch hasher
(_sha256.c), columns for the record text helpers (_records.c); and packed hashes (n
concatenated 32-byte digests) as the form the hasher's results take."""
from __future__ import annotations

import binascii

import numpy as np
import pyarrow as pa

HASH_SIZE = 32


def buffers(items: pa.Array | pa.ChunkedArray) -> list[tuple[memoryview, np.ndarray]]:
    """(data, int64 offsets) of each chunk of a binary or string array, UTF-8 for strings; a
    null reads as empty bytes (callers that must reject nulls check null_count)."""
    if not (pa.types.is_binary(items.type) or pa.types.is_large_binary(items.type) or pa.types.is_string(items.type)
            or pa.types.is_large_string(items.type) or pa.types.is_fixed_size_binary(items.type)
            or pa.types.is_binary_view(items.type) or pa.types.is_string_view(items.type)):
        raise TypeError(f"expected a binary or string array, not {items.type}")
    chunks = items.chunks if isinstance(items, pa.ChunkedArray) else [items]
    out = []
    for c in chunks:
        if not len(c):
            continue
        if not pa.types.is_large_binary(c.type):
            c = c.cast(pa.large_binary())
        if c.null_count:
            c = c.fill_null(b"")
        offsets = np.frombuffer(c.buffers()[1], np.int64, len(c) + 1, 8 * c.offset)
        data = c.buffers()[2]
        out.append((memoryview(data) if data is not None else memoryview(b""), offsets))
    return out


def views(items: pa.Array | pa.ChunkedArray) -> list[tuple[memoryview, tuple]] | None:
    """(16-byte views, data buffers) of each chunk of a binary or string view array; None
    for other types."""
    if not (pa.types.is_binary_view(items.type) or pa.types.is_string_view(items.type)):
        return None
    chunks = items.chunks if isinstance(items, pa.ChunkedArray) else [items]
    out = []
    for c in chunks:
        if not len(c):
            continue
        buffers = c.buffers()
        out.append((memoryview(buffers[1])[16 * c.offset:16 * (c.offset + len(c))],
                    tuple(memoryview(b if b is not None else b"") for b in buffers[2:])))
    return out


def split(packed: bytes) -> list[bytes]:
    """Packed hashes as a list of 32-byte digests."""
    return [packed[i:i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]


def hex_array(packed: bytes) -> pa.Array:
    """Packed hashes as an arrow string array of lowercase hex, built from one hexlify (int32
    offsets: up to 33M hashes per call)."""
    n = len(packed) // HASH_SIZE
    offsets = np.arange(0, 2 * HASH_SIZE * (n + 1), 2 * HASH_SIZE, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(binascii.hexlify(packed)))


def fixed_array(packed: bytes) -> pa.FixedSizeBinaryArray:
    """Packed hashes as an arrow fixed_size_binary(32) array over the same bytes."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(HASH_SIZE), len(packed) // HASH_SIZE, [None, pa.py_buffer(packed)])


def column_buffers(column: pa.Array) -> tuple:
    """(data, int64 offsets, validity bitmap or None, int32 indices or None) of a string or
    dictionary-encoded string column, or (values, None, validity, None) of an integer one
    (a timestamp as microseconds), as the _records helpers take a column."""
    if column.offset:
        column = pa.concat_arrays([column])  # a copy starting at offset 0
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("us", "UTC")).cast(pa.int64())
    if pa.types.is_integer(column.type):
        column = column.cast(pa.int64())
        return column.buffers()[1], None, column.buffers()[0], None
    if pa.types.is_dictionary(column.type) and not column.dictionary.null_count:
        strings = column.dictionary.cast(pa.large_string())
        if strings.offset:
            strings = pa.concat_arrays([strings])
        indices = column.indices.cast(pa.int32())
        _, offsets, data = strings.buffers()
        return (data if data is not None else b""), offsets, indices.buffers()[0], indices.buffers()[1]
    column = column.cast(pa.large_string())
    if column.offset:
        column = pa.concat_arrays([column])
    validity, offsets, data = column.buffers()
    return (data if data is not None else b""), offsets, validity, None
