"""Handlers of the core commands: generate, ingest, verify, keys, demo."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from .cli import emit
from .errors import AuditlakeError
from .lake.store import Lake
from .masking import escape_controls


def generate(args) -> int:
    from .generate import generate as run

    if "://" in args.out or args.out.startswith("s3:"):
        raise AuditlakeError(f"--out {args.out}: generate writes to a local folder (copy it to a bucket afterwards)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise AuditlakeError(f"--out {args.out} is a file: give a folder (it gets landing/ and ground_truth.json)")
    summary = run(args.out, events=args.events, seed=args.seed, days=args.days)
    emit(args, f"wrote {summary.get('events', args.events)} events to {args.out}/landing, ground truth {args.out}/ground_truth.json", summary)
    return 0


def ingest(args) -> int:
    from .ingest import ingest as run

    lake = Lake.open(args.lake)
    progress = None if args.json else (lambda msg: print(msg, file=sys.stderr))
    report = run(lake, args.paths or None, progress=progress)
    skipped = sum(1 for f in report.files if f.skipped)
    if not args.json:  # file names are a producer's: escaped, one line each
        for item in report.ignored:
            print(f"auditlake: ignored {escape_controls(item['file'])}: {item['reason']}", file=sys.stderr)
        for f in report.files:
            if f.name_held_other:
                print(f"auditlake: warning: {escape_controls(f.file)} held other content when it was ingested before (SHA-256 "
                      f"{f.name_held_other[:12]}...): landing files are immutable; its lines were ingested as a new "
                      "file's (a repeated event id is quarantined as a replay)", file=sys.stderr)
    if report.catalog_note:
        print(f"auditlake: warning: {report.catalog_note}", file=sys.stderr)
    emit(
        args,
        f"ingested {len(report.files) - skipped} file(s) ({skipped} already ingested, {len(report.ignored)} ignored): "
        f"{report.accepted} accepted, "
        f"{report.quarantined} quarantined; tree size {report.tree_size}, root {report.root[:16]}... "
        f"in {report.duration_s:.1f}s",
        report.to_dict(),
    )
    return 0


def verify(args) -> int:
    from .verify import verify as run

    lake = Lake.open(args.lake)
    report = run(lake, trusted_file=args.trusted, update_trust=not args.no_trust_update, incremental=args.incremental)
    doc = report.to_dict()
    if args.json:
        print(json.dumps(doc))
    else:
        for f in report.findings:  # names of files planted in the lake are anyone's: escaped, one line each
            where = " ".join(f"{k}={v}" for k, v in (("table", f.table), ("partition", f.partition), ("file", f.file), ("seq", f.seq), ("event_id", f.event_id)) if v is not None)
            print(escape_controls(f"FINDING {f.kind}: {f.detail} [{where}]"))
        state = "intact" if report.ok else f"{len(report.findings)} finding(s)"
        print(f"{state}: {report.events} events, {report.checkpoints} checkpoints, root {report.root[:16]}... ({report.duration_s:.2f}s)")
    return 0 if report.ok else 1


def keys(args) -> int:
    from .lake.meta import open_lake_keys

    lake = Lake.open(args.lake)
    ks = open_lake_keys(lake)
    if args.action == "rotate":
        from .audit_events import log_unlogged_rotation, record_audit_event, rotation_change

        log_unlogged_rotation(lake, ks)  # an earlier rotation stopped before its record
        change = {"setting": "keys", "category": "security"}

        def publish(rotated) -> None:  # under the keystore's lock: the keys just before are these
            publish_public_keys(lake, rotated)
            rotation.update(rotated.unlogged_rotations()[-1])  # this one's note
            change.update(rotation_change(rotation, rotated))

        rotation: dict = {}
        chain_id, sk_id = ks.rotate(publish=publish)
        change.update({k: v for k, v in (("change_ticket", args.change_ticket), ("approved_by", args.approved_by)) if v})
        # The rotation is an audit event of the ledger, its first row under the new keys.
        event_id = record_audit_event(lake, "config.changed", change)
        ks.rotation_logged(rotation)
        emit(args, f"rotated: chain key {chain_id}, signing key {sk_id} (audit event {event_id})",
             {"chain_key_id": chain_id, "signing_key_id": sk_id, "audit_event_id": event_id})
        return 0
    from .proofs import public_key_document

    doc = public_key_document(lake, ks)
    if args.out:
        lake.refuse_output_inside(args.out, "the key file")
        Path(args.out).write_text(json.dumps(doc, indent=2))
    emit(args, f"wrote {len(doc['public_keys'])} public key(s) of {ks.log_id} to {args.out}" if args.out
         else json.dumps(doc, indent=2), doc)
    return 0


def publish_public_keys(lake: Lake, ks) -> None:
    """Record the verification keys in the lake (informational: trust comes from the keystore)."""
    from .lake.meta import write_meta

    meta = lake.read_json("auditlake.json") or {}
    meta["public_keys"] = ks.public_keys()
    write_meta(lake, meta)


def demo(args) -> int:
    """Generate data, ingest it, verify, evaluate compliance and write the catalog."""
    import tempfile

    from .catalog import build_catalog
    from .compliance.run import evaluate_lake
    from .generate import generate as gen
    from .ingest import ingest as run_ingest
    from .verify import verify as run_verify

    lake = Lake.open(args.lake)

    def say(line: str) -> None:  # step by step for a person; --json prints one document at the end
        if not args.json:
            print(line, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        gen(tmp, events=args.events, seed=args.seed)
        report = run_ingest(lake, [str(Path(tmp) / "landing")])
    say(f"ingest: {report.accepted} events sealed, {report.quarantined} lines quarantined -> {lake.uri}")
    v = run_verify(lake)
    say(f"verify: {'intact' if v.ok else f'{len(v.findings)} FINDINGS'} ({v.events} events, root {v.root[:16]}...)")
    summary = evaluate_lake(lake)
    say(f"compliance: {summary.get('findings', summary)} findings")
    db = build_catalog(lake)["db"]
    say(f"catalog: {db} (open it with `duckdb -readonly {db}`)")
    # Typed as shown, from any folder and without the venv activated.
    bin_dir = Path(sys.executable).parent
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    lake_arg = shlex.quote(lake.uri)
    explore = f"{shlex.quote(str(bin_dir / 'auditlake'))} --lake {lake_arg} explore"
    operate = (f"DAGSTER_HOME={shlex.quote(str(workspace.parent / '.dagster_home'))} AUDITLAKE_LAKE={lake_arg} "
               f"{shlex.quote(str(bin_dir / 'dagster'))} dev -w {shlex.quote(str(workspace))}")
    say(f"explore: {explore}   |   operate: {operate}")
    if args.json:
        print(json.dumps({"lake": lake.uri, "ingest": {"accepted": report.accepted, "quarantined": report.quarantined},
                          "verify": v.to_dict(), "compliance": summary, "catalog": db, "explore": explore,
                          "operate": operate}, default=str))
    return 0 if v.ok else 1
