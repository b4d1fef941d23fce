"""The `healbot` command: run, diagnose, scan, doctor, status, history, audit, revert, init, demo."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

TYPE_CHECKING = False  # not typing's: `healbot scan` imports typing only after its grep started

if TYPE_CHECKING:
    import argparse

    from bot.grepfilter import GrepHits

# Imported where they are needed, not here: `healbot scan` starts its grep before logging, redaction and
# the grouping code are imported (tests/test_scan_imports.py checks what a scan imports).
DEFAULT_CONFIG = "healbot.toml"


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    import argparse  # not for the plain `healbot scan FILE` (bot.cli.parse_args)

    parser = argparse.ArgumentParser(
        prog="healbot",
        description="Self-healing ops bot: log errors → incidents → Claude's ranked fixes → approval → "
        "git commit → restart → health check → automatic revert.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v: what healbot does (INFO); -vv: debug details"
    )
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def _add_scan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scan = sub.add_parser("scan", help="dry run of grouping on a real log file (like fail2ban-regex)")
    scan.add_argument("file", type=Path)
    scan.add_argument("--service", default="scan")
    scan.add_argument("--all", action="store_true", help="group every record, not only errors")
    scan.add_argument(
        "--raw", action="store_true", help="show sample lines raw, not redacted as they would be sent"
    )
    scan.add_argument(
        "--groups-out", type=Path, help='write {"line": N, "group": KEY} per input line (JSONL)'
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`_parser().parse_args(argv)`, cheaper for `healbot scan`, which starts its grep right after this.

    The plain `healbot scan FILE` is read without argparse (importing it costs a millisecond and more before
    grep starts, building the parser imports shutil and locale, and all subcommands cost 5 ms more): its
    namespace has the attributes of a parsed one. Any other scan is parsed by a parser that knows only
    `scan`: it parses a scan's arguments, and says their errors, as the whole parser would.
    """
    if argv[:1] != ["scan"]:
        return _parser().parse_args(argv)
    if len(argv) == 2 and not argv[1].startswith("-"):
        return SimpleNamespace(  # type: ignore[return-value]  # read by attribute only, as a Namespace
            verbose=0,
            command="scan",
            file=Path(argv[1]),
            service="scan",
            all=False,
            raw=False,
            groups_out=None,
        )
    parser, sub = _top_parser()
    _add_scan(sub)
    return parser.parse_args(argv)


def _parser() -> argparse.ArgumentParser:
    parser, sub = _top_parser()

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c", "--config", default=DEFAULT_CONFIG, help="path to healbot.toml (default: %(default)s)"
        )

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)
    run.add_argument(
        "--yes", action="store_true", help="console channel: approve the top candidate unattended"
    )
    run.add_argument(
        "--log-json",
        action="store_true",
        help='log one JSON object per line (same as [healbot] log_format = "json")',
    )

    diag = sub.add_parser("diagnose", help="one-shot, read-only diagnosis of a service's recent errors")
    with_config(diag)
    diag.add_argument("service")
    diag.add_argument("--tail-bytes", type=int, default=256 * 1024, help="how much of each log to read")

    _add_scan(sub)

    doctor = sub.add_parser("doctor", help="check config, claude, managers, logs; each problem with its fix")
    with_config(doctor)

    status = sub.add_parser("status", help="open incidents, pending approvals, recent changes")
    with_config(status)

    formats = ("text", "jsonl", "csv")
    history = sub.add_parser("history", help="recent changes with their verdicts")
    with_config(history)
    history.add_argument("--service", help="only this service")
    history.add_argument("--limit", type=int, default=20, help="how many changes (default: %(default)s)")
    history.add_argument("--format", choices=formats, default="text")

    audit = sub.add_parser("audit", help="export the audit log (who did what, when)")
    with_config(audit)
    audit.add_argument("--since", help="a duration back from now (30m, 2h, 7d) or an ISO date/time (UTC)")
    audit.add_argument("--format", choices=formats, default="jsonl")
    audit.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")

    revert = sub.add_parser("revert", help="revert a healbot change (exactly its commit) and restart")
    with_config(revert)
    revert.add_argument("change", type=int)

    init = sub.add_parser("init", help="detect services on this host and write a commented healbot.toml")
    init.add_argument("-o", "--output", type=Path, default=Path(DEFAULT_CONFIG), help="default: %(default)s")
    init.add_argument("--yes", action="store_true", help="ask nothing: take every detected service")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--channel", default="console", help="console or telegram (default: %(default)s)")
    init.add_argument("--approver", action="append", default=[], help="telegram user id (repeatable)")
    init.add_argument("--chat", action="append", default=[], help="telegram chat id (repeatable)")
    init.add_argument("--state-dir", default="/var/lib/healbot", help="default: %(default)s")
    init.add_argument("--pm2-home", help="PM2_HOME to ask (default: $PM2_HOME or ~/.pm2)")
    init.add_argument(
        "--supervisord-socket", action="append", default=[], help="socket to ask (default: common paths)"
    )
    init.add_argument("--no-detect", action="store_true", help="do not look for services")

    mcp = sub.add_parser(
        "mcp", help="the read-only MCP server one diagnosis looks through (stdio; claude starts it)"
    )
    mcp.add_argument("--scope", type=Path, required=True, help="the scope file the runner wrote")

    demo = sub.add_parser("demo", help="the whole loop on a bundled sample service (no accounts needed)")
    demo.add_argument("--yes", action="store_true", help="approve the top candidate without asking")
    demo.add_argument(
        "--live", action="store_true", help="use your logged-in claude instead of the scripted fake"
    )
    demo.add_argument("--summary-json", type=Path, help="write the summary table as JSON")
    demo.add_argument("--workdir", type=Path, help="keep the demo's files here instead of a temp dir")
    demo.add_argument(
        "--telegram",
        action="store_true",
        help="approve through the real Telegram channel against the bundled fake Bot API (a scripted "
        "operator presses Approve #1) and print the chat transcript",
    )
    demo.add_argument("--html", type=Path, help="with --telegram: write the chat transcript as one HTML page")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command != "scan":
        return _main(args, None)
    # A scan makes no reference cycles worth collecting: its imports and records would only make the
    # collector walk them again and again (a few ms of the imports alone).
    collecting = gc.isenabled()
    gc.disable()
    hits = _start_scan_search(args)
    program = argv is None  # the `healbot` program itself, not a caller in this process
    try:
        status = _main(args, hits)
    except BrokenPipeError:  # the reader of the output left (`healbot scan FILE | head`)
        status = 1
        if program:
            _discard_stdout()
    finally:
        if hits is not None:
            hits.close()
        if collecting:
            gc.enable()
    if program:
        _exit_without_teardown(status)
    return status


def _discard_stdout() -> None:
    """What is left unflushed for a reader that left goes nowhere (else Python reports the closed pipe
    again when it exits)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _exit_without_teardown(status: int) -> None:
    """End the process now once what it printed is flushed: the interpreter's teardown would free every
    record and module of the scan one by one (a tenth of a scan's time on a million lines), and a scan
    leaves nothing that needs it (grep is reaped, the file closed, no thread or atexit work of its own).
    Returns, for the usual exit, when flushing fails."""
    import logging
    import os

    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(status)


def _start_scan_search(args: argparse.Namespace) -> GrepHits | None:
    from bot.scan_command import start_search

    return start_search(args.file, all_records=args.all, groups_out=args.groups_out)


def _main(args: argparse.Namespace, hits: GrepHits | None) -> int:
    from bot.errors import ConfigError, HealbotError
    from bot.logging_setup import LogFormat, configure_logging
    from bot.redact import RedactingWriter

    level = log_level(args.verbose, daemon=args.command == "run")
    configure_logging(LogFormat.TEXT, level=level)
    quiet_libraries(level)
    streams = sys.stdout, sys.stderr
    # Everything the CLI prints passes bot.redact; the history and audit exports are redacted field by
    # field as they are rendered (bot.audit_export.render), which keeps commit ids readable; `mcp` speaks
    # the protocol on stdout, each answer redacted by the server.
    if not getattr(args, "raw", False) and args.command not in {"history", "audit", "mcp"}:
        sys.stdout, sys.stderr = RedactingWriter(sys.stdout), RedactingWriter(sys.stderr)
    try:
        return _dispatch(args, hits)
    except ConfigError as exc:
        print(f"healbot: config error: {exc}", file=sys.stderr)
        return 2
    except HealbotError as exc:
        print(f"healbot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout, sys.stderr = streams


# Libraries that say at INFO what healbot does every second (APScheduler: two lines per poll; httpx: one per
# Telegram call, URL and token included): only their warnings, unless -vv.
CHATTY_LIBRARIES = ("apscheduler", "httpx", "httpcore", "telegram")


def quiet_libraries(level: int) -> None:
    import logging

    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else logging.WARNING)


def log_level(verbose: int, *, daemon: bool) -> int:
    """One-shot commands say only warnings; the daemon also says what it does (INFO), as a journal should;
    -v gives INFO to any command, -vv DEBUG."""
    import logging

    if verbose >= 2:
        return logging.DEBUG
    return logging.INFO if verbose == 1 or daemon else logging.WARNING


def _dispatch(args: argparse.Namespace, hits: GrepHits | None) -> int:
    if args.command == "scan":
        from bot.scan_command import scan

        return scan(
            args.file,
            service=args.service,
            all_records=args.all,
            groups_out=args.groups_out,
            raw=args.raw,
            hits=hits,
        )

    if args.command == "mcp":
        from bot.mcp_server.server import serve

        return serve(args.scope)

    import asyncio  # ~50 ms: only the commands below need it, not `scan`

    from bot import commands

    if args.command == "run":
        return asyncio.run(commands.run(Path(args.config), auto_approve=args.yes, log_json=args.log_json))
    if args.command == "diagnose":
        return asyncio.run(
            commands.diagnose_service(Path(args.config), args.service, tail_bytes=args.tail_bytes)
        )
    if args.command == "doctor":
        return commands.doctor(Path(args.config))
    if args.command == "status":
        return commands.status(Path(args.config))
    if args.command == "history":
        return commands.history(Path(args.config), service=args.service, limit=args.limit, fmt=args.format)
    if args.command == "audit":
        return commands.audit(Path(args.config), since=args.since, fmt=args.format, output=args.output)
    if args.command == "revert":
        return asyncio.run(commands.revert(Path(args.config), args.change))
    if args.command == "init":
        return commands.init(args)
    if args.command == "demo":
        from bot.demo.run import run_demo

        return run_demo(
            yes=args.yes,
            live=args.live,
            summary_json=args.summary_json,
            workdir=args.workdir,
            telegram=args.telegram,
            html=args.html,
        )
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
