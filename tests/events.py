"""Hand-made landing events for tests that need exact control (the generator makes bulk data),
and the damaged or forged files some tests put in a landing zone or a lake."""
from __future__ import annotations

import json
import uuid
from pathlib import Path


def event(event_type: str = "call.started", n: int = 0, **overrides) -> dict:
    data = {
        "call.started": {"call_id": f"call-{n}", "direction": "outbound", "purpose": "telemarketing",
                         "campaign_id": "camp-1", "publisher_id": "pub-1"},
        "consent.granted": {"consent_id": f"c-{n}", "method": "web_form", "seller": "acme"},
        "user.login": {"method": "password"},
    }[event_type]
    ev = {
        "event_id": str(uuid.UUID(int=n + 1, version=4)),
        "occurred_at": f"2026-03-{1 + n % 28:02d}T14:{n % 60:02d}:22.123Z",
        "event_type": event_type,
        "source": "routing-engine",
        "tenant_id": "tenant-a",
        "actor": {"type": "service", "id": "router", "ip": f"10.1.{n % 250}.{n % 200}"},
        "subject": {"id": f"subj-{n % 7}", "phone": f"+1312555{n % 10000:04d}", "email": f"person{n}@example.com",
                    "name": f"Person Number{n}", "country": "US", "region": "IL", "timezone": "America/Chicago"},
        "lawful_basis": "consent",
        "data": data,
    }
    ev.update(overrides)
    return ev


def write_jsonl(path: Path, lines: list) -> Path:
    """Write events (dicts) or raw strings, one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for item in lines:
            f.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
    return path


def parquet_torn_at_row(path, rows, torn_group):
    """`rows` as Parquet in row groups of two, with row group `torn_group`'s pages overwritten."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    group = pq.ParquetFile(path).metadata.row_group(torn_group)
    cols = [group.column(i) for i in range(group.num_columns)]
    start = min(c.dictionary_page_offset or c.data_page_offset for c in cols)
    end = max((c.dictionary_page_offset or c.data_page_offset) + c.total_compressed_size for c in cols)
    data = bytearray(path.read_bytes())
    data[start:end] = b"\xff" * (end - start)
    path.write_bytes(bytes(data))


def forge_delta_checkpoint(table_dir: Path, victim: str, edit=None) -> Path:
    """A Delta checkpoint of the table as its log stands, with the add action of the data
    file `victim` (relative to the table) changed by `edit` or, without one, left out, and
    the `_last_checkpoint` hint that makes readers start there. Returns the checkpoint's path."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    DeltaTable(str(table_dir)).create_checkpoint()
    checkpoint = max(table_dir.glob("_delta_log/*.checkpoint.parquet"))
    t = pq.read_table(checkpoint)
    adds = t.column("add").to_pylist()
    hit = [bool(a and a["path"] == victim) for a in adds]
    assert any(hit), victim
    if edit is None:
        t = t.filter([not h for h in hit])
    else:
        forged = pa.array([edit(dict(a)) if h else a for a, h in zip(adds, hit)], t.schema.field("add").type)
        t = t.set_column(t.schema.get_field_index("add"), "add", forged)
    pq.write_table(t, checkpoint)
    return checkpoint
