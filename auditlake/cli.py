"""The `auditlake` command (INTERFACES.md). Exit codes: 0 success or intact, 1 the check
found a problem, 2 usage or I/O error (one line on stderr; with --json also
`{"ok": false, "error": ...}` on stdout, so a client parsing stdout always gets its document)."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .errors import AuditlakeError, NotIntactError

# command -> "module:function"; each function takes (args) and returns an exit code.
HANDLERS = {
    "generate": "auditlake.commands:generate",
    "ingest": "auditlake.commands:ingest",
    "verify": "auditlake.commands:verify",
    "keys": "auditlake.commands:keys",
    "compliance": "auditlake.compliance.command:run",
    "catalog": "auditlake.catalog:cli_catalog",
    "export": "auditlake.export:cli_export",
    "verify-export": "auditlake.export:cli_verify_export",
    "prove": "auditlake.proofs:cli_prove",
    "verify-proof": "auditlake.proofs:cli_verify_proof",
    "erase": "auditlake.privacy:cli_erase",
    "dsar": "auditlake.privacy:cli_dsar",
    "init": "auditlake.lake.admin:cli_init",
    "hold": "auditlake.lake.admin:cli_hold",
    "repair": "auditlake.lake.admin:cli_repair",
    "explore": "auditlake.catalog:cli_explore",
    "demo": "auditlake.commands:demo",
}


def fail(message: str, as_json: bool, command: str | None = None) -> int:
    """A usage or I/O error: one line on stderr, exit 2. With --json, a document saying so;
    verify's keeps the shape INTERFACES.md gives it (ok false, so one finding: the error)."""
    from .masking import escape_controls

    message = escape_controls(message)
    print(f"auditlake: {message}", file=sys.stderr)
    if as_json:
        doc = {"ok": False, "error": message}
        if command == "verify":
            doc |= {"events": 0, "findings": [{"kind": "error", "table": "lake", "partition": None, "file": None,
                                                 "seq": None, "event_id": None, "detail": message}]}
        try:
            print(json.dumps(doc))
        except OSError:  # stdout is gone (a closed pipe): the line on stderr says it
            pass
    return 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(message)


def _positive(text: str) -> int:
    """A count of at least one."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    # --lake and --json are accepted before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lake", default=argparse.SUPPRESS, help="a folder or s3://bucket/prefix (default $AUDITLAKE_LAKE or ./lake)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document on stdout")
    p = _Parser(prog="auditlake", description="A tamper-evident audit data lake.")
    p.add_argument("--lake", default=None, help="a folder or s3://bucket/prefix (default $AUDITLAKE_LAKE or ./lake)")
    p.add_argument("--json", action="store_true", default=False, help="print one JSON document on stdout")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    g = cmd("generate", "write realistic landing files with planted violations and their ground truth")
    g.add_argument("--events", type=_positive, required=True,
                   help="lines to write (at least the planted cases and one of each malformed kind)")
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--days", type=_positive, default=30)

    i = cmd("ingest", "ingest landing files (default: the lake's landing/)")
    i.add_argument("paths", nargs="*")

    v = cmd("verify", "check chains, Merkle roots, signed checkpoints and the table history")
    v.add_argument("--trusted", help="a checkpoint JSON file to trust instead of the trust store")
    v.add_argument("--no-trust-update", action="store_true", help="do not advance the trust store")
    v.add_argument("--incremental", action="store_true",
                   help="re-read only the events after the trusted checkpoint (history and checkpoints in full)")

    k = cmd("keys", "key management")
    k.add_argument("action", choices=["rotate", "export-public"])
    k.add_argument("--out", help="file for export-public")
    k.add_argument("--change-ticket", help="rotate: the change ticket (a security change; SOX-CHANGE flags one without)")
    k.add_argument("--approved-by", help="rotate: who approved it (not the one who rotates)")

    c = cmd("compliance", "evaluate the rules of RULES.md into the findings table")
    c.add_argument("--as-of", help="an RFC 3339 instant or a date (UTC midnight) (default: the latest occurred_at in the ledger)")

    cat = cmd("catalog", "write a DuckDB database whose views read the lake")
    cat.add_argument("--db", help="path of the DuckDB file (default <lake>/catalog.duckdb; for S3 $AUDITLAKE_HOME/catalogs/<bucket>_<prefix>.duckdb)")

    e = cmd("export", "write a redacted export bundle with a signed manifest")
    e.add_argument("--format", default="parquet", help="comma-separated: parquet,csv,jsonl (default parquet)")
    e.add_argument("--out", required=True)
    e.add_argument("--from", dest="time_from", help="occurred_at >= this RFC 3339 instant")
    e.add_argument("--to", dest="time_to", help="occurred_at < this RFC 3339 instant")
    e.add_argument("--event-type", action="append", default=[], help="repeatable")
    e.add_argument("--tenant", action="append", default=[], help="repeatable")
    e.add_argument("--subject", action="append", default=[], help="repeatable")
    e.add_argument("--profile", default="default", help="redaction profile name")
    e.add_argument("--profiles", help="redaction profiles file (TOML)")
    e.add_argument("--reveal-reason", help="a privileged export that reveals PII, with the reason logged")

    ve = cmd("verify-export", "check an export bundle offline")
    ve.add_argument("dir")
    ve.add_argument("--public-key", help="public key file (JSON from `auditlake keys export-public`; default: the keys "
                    "of the lake of --lake, AUDITLAKE_LAKE or ./lake; without either it refuses, as the bundle's own "
                    "key would show integrity, not origin)")

    pr = cmd("prove", "an inclusion proof for one event (or a consistency proof)")
    pr.add_argument("event_id", nargs="?")
    pr.add_argument("--consistency", nargs=2, type=int, metavar=("OLD", "NEW"), help="tree sizes of two checkpoints")
    pr.add_argument("--out", help="write the proof to this file instead of stdout")

    vp = cmd("verify-proof", "check a proof offline")
    vp.add_argument("file")
    vp.add_argument("--public-key", help="public key file (JSON from `auditlake keys export-public`; default: the keys "
                    "of the lake of --lake, AUDITLAKE_LAKE or ./lake; without either it refuses, as the proof's own "
                    "key would show integrity, not origin)")

    er = cmd("erase", "GDPR/CCPA erasure by crypto-shredding the subject's data key")
    er.add_argument("subject_id")
    er.add_argument("--reason", default="data subject request")

    ds = cmd("dsar", "subject access export: every event of the subject with PII decrypted")
    ds.add_argument("subject_id")
    ds.add_argument("--out", required=True)

    ini = cmd("init", "prepare a lake (S3: versioning, Object Lock, lifecycle)")
    ini.add_argument("--retention-years", type=int,
                     help="at least 7 (RET-WORM); can be raised, never lowered (default: as the lake has it, 7 on a new lake)")
    ini.add_argument("--cold-after-days", type=int, help="days before the S3 cold tier, at least 30 (default: as the lake has it, 90 on a new lake)")

    h = cmd("hold", "set or lift a legal hold")
    h.add_argument("action", choices=["set", "lift", "status"])
    h.add_argument("--subject", help="limit the hold to one subject (default: the whole lake)")
    h.add_argument("--reason", default="")
    h.add_argument("--hold-id", help="lift: the hold to end, when several are active on the scope")

    cmd("repair", "restore tampered objects from their sealed versions")

    ex = cmd("explore", "open the Streamlit explorer on the lake")
    ex.add_argument("--port", type=int, default=8501)
    ex.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ex.add_argument("--users", help="explorer users file (default $AUDITLAKE_EXPLORER_USERS or <AUDITLAKE_HOME>/explorer_users.toml)")

    d = cmd("demo", "run the whole pipeline on generated data in a local lake")
    d.add_argument("--events", type=_positive, default=20_000)
    d.add_argument("--seed", type=int, default=1)
    return p


def emit(args, human: str, doc: dict) -> None:
    print(json.dumps(doc, default=str) if getattr(args, "json", False) else human)


def _one_line(exc: BaseException) -> str:
    """Errors from S3, pyarrow and delta-rs (multi-line, coloured) as one clear line."""
    from .lake.s3 import error_line

    return error_line(exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:  # the arguments did not parse, so --json is looked for by hand
        raise SystemExit(fail(str(exc), "--json" in argv, next((a for a in argv if a in HANDLERS), None))) from None
    module, func = HANDLERS[args.command].split(":")
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except NotIntactError as exc:
        fail(_one_line(exc), args.json, args.command)
        return 1
    except AuditlakeError as exc:
        return fail(_one_line(exc), args.json, args.command)
    except KeyboardInterrupt:
        return fail("interrupted", args.json, args.command)
    except Exception as exc:  # noqa: BLE001 - a user sees one line; AUDITLAKE_DEBUG=1 shows the traceback
        if os.environ.get("AUDITLAKE_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.strerror:  # a path the command was given: the reason and the path
            return fail(exc.strerror + (f": {exc.filename}" if exc.filename else ""), args.json, args.command)
        return fail(f"{exc.__class__.__name__}: {_one_line(exc)}", args.json, args.command)


if __name__ == "__main__":
    sys.exit(main())
