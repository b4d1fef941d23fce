"""The `healbot` command: run, diagnose, scan, doctor, status, revert, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.errors import ConfigError, HealbotError

DEFAULT_CONFIG = "healbot.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healbot",
        description="Self-healing ops bot: log errors → incidents → Claude's ranked fixes → approval → "
        "git commit → restart → health check → automatic revert.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c", "--config", default=DEFAULT_CONFIG, help="path to healbot.toml (default: %(default)s)"
        )

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)
    run.add_argument(
        "--yes", action="store_true", help="console channel: approve the top candidate unattended"
    )

    diag = sub.add_parser("diagnose", help="one-shot, read-only diagnosis of a service's recent errors")
    with_config(diag)
    diag.add_argument("service")
    diag.add_argument("--tail-bytes", type=int, default=256 * 1024, help="how much of each log to read")

    scan = sub.add_parser("scan", help="dry run of grouping on a real log file (like fail2ban-regex)")
    scan.add_argument("file", type=Path)
    scan.add_argument("--service", default="scan")
    scan.add_argument("--all", action="store_true", help="group every record, not only errors")
    scan.add_argument(
        "--groups-out", type=Path, help='write {"line": N, "group": KEY} per input line (JSONL)'
    )

    doctor = sub.add_parser("doctor", help="check config, claude, managers, logs; each problem with its fix")
    with_config(doctor)

    status = sub.add_parser("status", help="open incidents, pending approvals, recent changes")
    with_config(status)

    revert = sub.add_parser("revert", help="revert a healbot change (exactly its commit) and restart")
    with_config(revert)
    revert.add_argument("change", type=int)

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
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"healbot: config error: {exc}", file=sys.stderr)
        return 2
    except HealbotError as exc:
        print(f"healbot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from bot import commands

    if args.command == "run":
        return asyncio.run(commands.run(Path(args.config), auto_approve=args.yes))
    if args.command == "diagnose":
        return asyncio.run(
            commands.diagnose_service(Path(args.config), args.service, tail_bytes=args.tail_bytes)
        )
    if args.command == "scan":
        return commands.scan(
            args.file, service=args.service, all_records=args.all, groups_out=args.groups_out
        )
    if args.command == "doctor":
        return commands.doctor(Path(args.config))
    if args.command == "status":
        return commands.status(Path(args.config))
    if args.command == "revert":
        return asyncio.run(commands.revert(Path(args.config), args.change))
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
