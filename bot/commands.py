"""What each `healbot` sub-command does, apart from argument parsing (bot/cli.py) and the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from bot import audit_export, proc, registry
from bot.config import HealbotConfig, ServiceConfig, load_config
from bot.console import ConsoleChannel
from bot.daemon import Daemon, build_runner, build_services, heal_context, state_dir_problem
from bot.diagnose import diagnose
from bot.errors import ConfigError, HealbotError
from bot.evidence import collect_evidence
from bot.heartbeat import load_scans, scan_lines
from bot.interfaces import SandboxedCheck
from bot.logging_setup import LogFormat, configure_logging
from bot.mcp_server import looked_at
from bot.mcp_server.scope import scope_for
from bot.models import FixKind, Incident, IncidentState, Proposal, ProposalStatus
from bot.recent import most_frequent_error
from bot.redact import redact, scrubber
from bot.render import candidate_line, proposal_text, when
from bot.runner.claude_cli import INSTALL_HINT
from bot.runner.messages_api import MessagesApiRunner
from bot.sources import build_sources, probe_sources
from bot.sources.managed import ManagerLogSources
from bot.store import Store

log = logging.getLogger("healbot")

CLAUDE_VERSION_TIMEOUT_S = 20.0


async def run(config_path: Path, *, auto_approve: bool, log_json: bool = False) -> int:
    stop = asyncio.Event()  # handlers first: a SIGTERM during start-up still stops cleanly
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = load_config(config_path)
    if (problem := state_dir_problem(config.state_dir)) is not None:
        raise ConfigError(
            f"{problem} (fix: create it, writable by the user healbot runs as)", path=str(config_path)
        )
    json_logs = log_json or config.log_format == LogFormat.JSON
    configure_logging(LogFormat.JSON if json_logs else LogFormat.TEXT)
    runner = build_runner(config)
    for warning in runner.startup_warnings():
        log.warning("%s", warning)
    if config.approval.channel == "telegram":
        from bot.telegram import build_telegram_channel, token_from_env

        store = Store.open(config.db_path)
        channel = build_telegram_channel(config, store, token=token_from_env(os.environ), environ=os.environ)
        daemon = Daemon(config, channel, runner=runner, store=store)
        channel.bind(daemon.pipeline)
    else:
        console = ConsoleChannel(auto_approve=auto_approve, interactive=sys.stdin.isatty())
        daemon = Daemon(config, console, runner=runner)
    await daemon.run_forever(stop)
    return 0


async def diagnose_service(config_path: Path, service: str, *, tail_bytes: int) -> int:
    """Read-only: nothing is stored, proposed or applied. Prints the candidates with their exact diffs."""
    config = load_config(config_path)
    if service not in config.services:
        raise HealbotError(f"unknown service {service!r}; configured: {', '.join(config.services)}")
    runtime = build_services(config)[service]
    cfg = runtime.cfg
    log_paths = [*cfg.logs, *(Path(p) for p in runtime.manager.log_paths() if Path(p) not in cfg.logs)]
    recent, skipped = most_frequent_error(service, log_paths, tail_bytes)
    for problem in skipped:
        print(f"healbot: skipping {problem}", file=sys.stderr)
    if recent is None:
        print(f"no errors found in the last {tail_bytes // 1024} KB of {service}'s logs; nothing to diagnose")
        return 0
    fp, count = recent.fingerprint, recent.count
    now = time.time()
    incident = Incident(
        id=0,
        service=service,
        fingerprint=fp.key,
        title=fp.template,
        state=IncidentState.DIAGNOSING,
        first_seen=now,
        last_seen=now,
        count=count,
        samples=(redact(recent.sample).text,),
        exception_type=fp.exception_type,
        frames=fp.frames,
    )
    print(f"diagnosing {service}: {fp.template} (seen {count}× in the recent log); read-only")
    scrub = scrubber(os.environ)
    evidence = await asyncio.to_thread(
        collect_evidence,
        incident,
        repo=cfg.repo,
        allowed_paths=cfg.allowed_paths,
        runbooks=list(cfg.runbooks),
        past_outcomes=[],
        redact=scrub,
    )
    runner = build_runner(config)
    try:
        manager_logs = list(runtime.manager.log_paths())
    except HealbotError:
        manager_logs = []
    tools = scope_for(
        cfg, incident, manager_logs=manager_logs, config_path=config.path, db_path=config.db_path
    )
    result = await diagnose(runner, evidence, str(cfg.repo), persist_session=False, tools=tools)
    healers = registry.all_healers()
    candidates = []
    for fix in result.fixes:
        try:
            candidates.append(
                await asyncio.to_thread(healers[fix.kind].prepare, runtime.heal_ctx, fix, evidence.head)
            )
        except HealbotError as exc:
            print(f"candidate #{fix.rank} dropped: {exc}")
    proposal = Proposal(
        0, 0, "-", evidence.head, tuple(candidates), now, now, ProposalStatus.PENDING, result.summary
    )
    print(scrub(proposal_text(incident, proposal)))
    cost = f"${result.stats.cost_usd:.4f}" if result.stats.cost_usd is not None else "n/a"
    print(
        f"\n{result.stats.runner}: {result.stats.duration_s:.1f} s, {result.stats.turns} turns, cost {cost}"
    )
    if result.stats.tool_calls:
        print(f"looked at: {looked_at.summary(result.stats.tool_calls)}")
    return 0


def doctor(config_path: Path) -> int:
    """Check everything the daemon needs; print each problem with its fix. Exit 1 when any is found."""
    problems: list[str] = []
    oks: list[str] = []
    try:
        config = load_config(config_path)
    except HealbotError as exc:
        print(f"✗ config: {exc}")
        return 1
    oks.append(f"config {config_path}: {len(config.services)} service(s)")
    if (problem := state_dir_problem(config.state_dir)) is not None:
        problems.append(problem)
    problems.extend(_claude_problems(config))
    for name, cfg in config.services.items():
        try:
            manager = registry.service_manager(cfg.manager_type, name, cfg.manager_options, str(config.path))
        except HealbotError as exc:
            problems.append(f"{name}: {exc}")
            continue
        manager_problem = manager.check()
        if manager_problem:
            problems.append(f"{name}: {cfg.manager_type}: {manager_problem}")
        else:
            oks.append(f"{name}: {cfg.manager_type} reachable")
        if cfg.check_command:
            sandbox_problem = _sandbox_problem(config, cfg)
            if sandbox_problem is None:
                oks.append(f"{name}: check_command runs sandboxed (bubblewrap)")
            else:
                problems.append(f"{name}: check_command will not run: {sandbox_problem}")
        sources = build_sources(cfg, manager)
        asks_manager = {s.source_id for s in sources if isinstance(s, ManagerLogSources)}
        for row in probe_sources(name, sources):
            if row.ok:
                oks.append(f"{name}: {row.describe()}")
            elif manager_problem and row.source_id in asks_manager:
                # its problem is the manager's own, printed just above: said once is clearer
                problems.append(
                    f"{name}: {row.source_id}: waits for {cfg.manager_type} (see above); {row.retry}"
                )
            else:
                problems.append(f"{name}: {row.describe()}")
    for line in oks:
        print(f"✓ {line}")
    for line in problems:
        print(f"✗ {line}")
    return 1 if problems else 0


def _sandbox_problem(config: HealbotConfig, cfg: ServiceConfig) -> str | None:
    """Whether the patch healer can run this service's check command in its sandbox."""
    try:
        healer = registry.healer(FixKind.PATCH)
    except HealbotError as exc:
        return str(exc)
    if not isinstance(healer, SandboxedCheck):
        return None
    return healer.sandbox_problem(heal_context(cfg, config.sandbox))


def mcp_problem(config: HealbotConfig) -> str | None:
    """healbot's MCP tools need the `mcp` SDK; its absence is a problem only when they are in force."""
    import importlib.util

    if config.claude.tools == "builtin" or importlib.util.find_spec("mcp") is not None:
        return None
    return (
        "claude tools: the `mcp` package is not installed, so `healbot mcp` cannot start (fix: reinstall "
        'healbot with its dependencies, or set [claude] tools = "builtin")'
    )


def _claude_problems(config: HealbotConfig) -> list[str]:
    runner = build_runner(config)
    if isinstance(runner, MessagesApiRunner):
        warnings = runner.startup_warnings()
        if not warnings:
            print(f"✓ claude: {runner.describe_billing()}")
            print("✓ claude tools: none with the Messages-API runner (the evidence is in the prompt)")
        return warnings
    billing = (
        "per token (ANTHROPIC_API_KEY is passed)"
        if "ANTHROPIC_API_KEY" in config.claude.pass_env
        else ("the operator's subscription login")
    )
    print(f"✓ claude runner: cli, billed to {billing}")
    tools_problem = mcp_problem(config)
    if tools_problem is None:
        print(f"✓ claude tools: {runner.tools_in_force()}")
    binary = shutil.which(config.claude.binary) or (
        config.claude.binary if os.access(config.claude.binary, os.X_OK) else None
    )
    if binary is None:
        return [f"claude binary {config.claude.binary!r} not found (fix: {INSTALL_HINT})"]
    try:
        out = proc.run([binary, "--version"], timeout_s=CLAUDE_VERSION_TIMEOUT_S)
    except HealbotError as exc:
        return [f"claude --version failed: {exc}"]
    if out.timed_out:
        return [f"claude --version failed: no answer within {CLAUDE_VERSION_TIMEOUT_S:.0f} s"]
    problems = [tools_problem] if tools_problem else []
    if out.returncode != 0:
        problems.append(f"claude --version exited {out.returncode}: {out.stderr_text.strip()[:200]}")
    home = Path(os.environ.get("CLAUDE_CONFIG_DIR", Path.home() / ".claude"))
    logged_in = (home / ".credentials.json").exists() or any(k in os.environ for k in config.claude.pass_env)
    if not logged_in and config.claude.base_url is None:
        problems.append(
            f"claude does not look logged in (no {home}/.credentials.json) (fix: run `claude` once and /login)"
        )
    if "ANTHROPIC_API_KEY" in config.claude.pass_env:
        problems.append("ANTHROPIC_API_KEY is passed to claude: every diagnosis is billed per token")
    if not problems:
        print(f"✓ claude {out.stdout_text.strip()}")
    return problems


def status(config_path: Path) -> int:
    config = load_config(config_path, check_repos=False)
    store = Store.open(config.db_path)
    try:
        paused = store.get_setting("paused_until")
        print(f"healbot on {config.host_name}: {'PAUSED' if paused else 'active'} · state {config.db_path}")
        scans = load_scans(config.state_dir)
        if scans is None:
            print("heartbeat: no scan recorded (is `healbot run` running with this config?)")
        else:
            print("heartbeat:")
            for line in scan_lines(scans, time.time()):
                print(f"  {line}")
        incidents = store.incidents(open_only=True)
        print(f"open incidents: {len(incidents)}")
        for incident in incidents:
            print(
                f"  #{incident.id} [{incident.service}] {incident.state.value} {incident.count}× {incident.title[:80]}"
            )
        pending = store.pending_proposals()
        print(f"pending approvals: {len(pending)}")
        for proposal in pending:
            print(f"  incident #{proposal.incident_id}, expires {when(proposal.expires_at)}")
            for candidate in proposal.candidates:
                print(f"    {candidate_line(candidate)}")
        changes = store.changes(limit=10)
        print(f"recent changes: {len(changes)}")
        for change in changes:
            print(
                f"  change {change.id} [{change.service}] {change.kind.value} {(change.commit or '-')[:10]} "
                f"→ {change.status.value}, approved by {change.approved_by}"
            )
    finally:
        store.close()
    return 0


def history(config_path: Path, *, service: str | None, limit: int, fmt: str) -> int:
    config = load_config(config_path, check_repos=False)
    if service is not None and service not in config.services:
        raise HealbotError(f"unknown service {service!r}; configured: {', '.join(config.services)}")
    if limit < 1:
        raise HealbotError(f"--limit must be at least 1, not {limit}")
    store = Store.open(config.db_path)
    try:
        rows = audit_export.history_rows(store, service=service, limit=limit)
    finally:
        store.close()
    sys.stdout.write(audit_export.render(rows, audit_export.HISTORY_FIELDS, audit_export.ExportFormat(fmt)))
    return 0


def audit(config_path: Path, *, since: str | None, fmt: str, output: Path | None) -> int:
    config = load_config(config_path, check_repos=False)
    since_ts = None if since is None else audit_export.parse_since(since, now=time.time())
    store = Store.open(config.db_path)
    try:
        rows = audit_export.audit_rows(store, since=since_ts)
    finally:
        store.close()
    text = audit_export.render(rows, audit_export.AUDIT_FIELDS, audit_export.ExportFormat(fmt))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        print(f"{len(rows)} audit event(s) written to {output}", file=sys.stderr)
    return 0


async def revert(config_path: Path, change_id: int) -> int:
    config = load_config(config_path)
    daemon = Daemon(config, ConsoleChannel(interactive=False))
    try:
        print(await daemon.pipeline.revert_change(change_id, actor="console"))
    finally:
        daemon.store.close()
    return 0


def init(args: argparse.Namespace) -> int:
    """`healbot init`: detect services, ask (unless --yes), write a commented config."""
    from bot import init as init_config

    skip = frozenset(init_config.ManagerKind) if args.no_detect else frozenset()
    detect = init_config.DetectOptions(
        pm2_home=args.pm2_home,
        supervisord_sockets=tuple(args.supervisord_socket) or init_config.SUPERVISORD_SOCKETS,
        skip=skip,
    )
    defaults = init_config.InitAnswers(
        channel=args.channel, state_dir=args.state_dir, approvers=tuple(args.approver), chats=tuple(args.chat)
    )
    return init_config.run_init(
        args.output, assume_yes=args.yes, force=args.force, defaults=defaults, detect=detect
    )
