"""The log's head: tree size, chain head, Merkle frontier and the latest checkpoint,
read from one snapshot of the ledger and checkpoint tables."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from .errors import AuditlakeError
from .keys import KeyStore
from .lake.store import Lake
from .lake import tables
from .ledger import chain, merkle, packed
from .ledger.checkpoint import ZERO_HASH, Checkpoint


@dataclass
class Head:
    ledger_version: int | None
    checkpoints_version: int | None
    tree_size: int
    chain_head: bytes
    frontier: merkle.Frontier
    checkpoint: Checkpoint | None
    checkpoint_frontier_size: int
    # The frontier at the latest checkpoint and the leaf hashes of the tail after it (a
    # crash's unsealed batch), so that recovery can store the tail's tiles.
    checkpoint_frontier: merkle.Frontier
    tail_leaf_hashes: bytes


def read_checkpoints(lake: Lake, dt=None, sizes: list[int] | None = None, latest: bool = False) -> list[dict]:
    """Checkpoint rows (of `dt`'s version, else the latest) in (tree size, time) order. With
    `sizes` or `latest`, only the files whose tree_size statistics can hold those sizes or the
    largest one are read, so the rows may be a subset: a batch commits one checkpoint file,
    and the head must not read them all (one a batch, for years)."""
    dt = dt if dt is not None else lake.latest("checkpoints")
    if dt is None:
        return []
    acts = pa.table(dt.get_add_actions(flatten=True))
    paths = acts.column("path").to_pylist()
    if (sizes or latest) and {"min.tree_size", "max.tree_size"} <= set(acts.column_names):
        lo, hi = acts.column("min.tree_size").to_pylist(), acts.column("max.tree_size").to_pylist()
        top = max((h for h in hi if h is not None), default=None)
        paths = [p for p, a, b in zip(paths, lo, hi)
                 if a is None or b is None or (latest and b == top) or any(a <= x <= b for x in sizes or [])]
    rows = tables.dataset(lake, "checkpoints", dt, paths).to_table(columns=tables.CHECKPOINTS.names).to_pylist()
    return sorted(rows, key=lambda r: (r["tree_size"], r["time"]))


def load_head(lake: Lake, keys: KeyStore) -> Head:
    cps_dt = lake.latest("checkpoints")
    checkpoints_version = None if cps_dt is None else cps_dt.version()
    cps = read_checkpoints(lake, cps_dt, latest=True)
    latest = cps[-1] if cps else None
    if latest:
        size = latest["tree_size"]
        frontier = merkle.Frontier.from_hex(size, list(latest["frontier"] or []))
        if frontier.root().hex() != latest["root"]:
            raise AuditlakeError("the latest checkpoint's frontier does not match its root; run `auditlake verify`")
        head_hash = bytes.fromhex(latest["chain_head"])
        cp = Checkpoint.from_dict(latest)
    else:
        size, frontier, head_hash, cp = 0, merkle.Frontier.empty(), chain.GENESIS, None
    ledger = lake.latest("ledger")
    ledger_version = None
    tree_size = size
    checkpoint_frontier, tail_leaf_hashes = frontier, b""
    if ledger is not None:
        ledger_version = ledger.version()
        tail = (
            tables.dataset(lake, "ledger", ledger, tables.files_for_seq_ranges(ledger, [(size, 1 << 63)]))
            .to_table(columns=["seq", "leaf", "hash", "key_id"], filter=pc.field("seq") >= size)
            .sort_by("seq")
        )
        seqs = tail.column("seq").to_pylist()
        if seqs != list(range(size, size + len(seqs))):
            raise AuditlakeError("the ledger's tail after the last checkpoint is not contiguous; run `auditlake verify`")
        if seqs:
            leaves = tail.column("leaf")
            try:
                recomputed = chain.extend(keys.chain_keys(), head_hash, tail.column("key_id").to_pylist(), leaves)
            except (KeyError, ValueError):  # an unknown key id or a NULL leaf
                recomputed = b""
            if packed.hex_array(recomputed).to_pylist() != tail.column("hash").to_pylist():
                raise AuditlakeError("the ledger's tail after the last checkpoint does not chain; run `auditlake verify`")
            tail_leaf_hashes = merkle.leaf_hashes(leaves)
            frontier = frontier.extend(tail_leaf_hashes)
            head_hash = recomputed[-packed.HASH_SIZE:]
            tree_size = size + len(seqs)
    return Head(
        ledger_version=ledger_version,
        checkpoints_version=checkpoints_version,
        tree_size=tree_size,
        chain_head=head_hash,
        frontier=frontier,
        checkpoint=cp,
        checkpoint_frontier_size=size,
        checkpoint_frontier=checkpoint_frontier,
        tail_leaf_hashes=tail_leaf_hashes,
    )


def prev_checkpoint_hash(head: Head) -> str:
    return head.checkpoint.checkpoint_hash if head.checkpoint else ZERO_HASH
