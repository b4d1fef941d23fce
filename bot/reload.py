"""What a SIGHUP reload may change in a running daemon, and what waits for a restart.

Applied at once: the services (their logs/sources, manager, health checks, allowed paths, runbooks; a
service may be added or removed), poll and diagnosis intervals, max samples, approval expiry and reminder,
the second approver rule, `require_addressing`, the `[policy]` limits, and the heartbeat URL and interval.

Kept until a restart (reported in the log and the chat): the state directory, the whole `[claude]` table
(the runner is built once), the approval channel, approvers, chats and Bot API URL (the Telegram
connection and its allow-list are built once), the log format, the host name, and the `[metrics]` and
`[alerts]` tables (their servers listen from the start).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bot.config import ApprovalConfig, HealbotConfig

RESTART_ONLY_GENERAL = ("state_dir", "log_format", "host_name", "metrics", "alerts")
RESTART_ONLY_APPROVAL = ("channel", "approvers", "chats", "telegram_base_url")
LIVE_GENERAL = (
    "poll_interval_s",
    "diagnose_every_s",
    "max_samples",
    "policy",
    "heartbeat_url",
    "heartbeat_interval_s",
)
LIVE_APPROVAL = ("expiry_s", "reminder_before_s", "second_approver_for_high_risk", "require_addressing")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: HealbotConfig  # the new config with every restart-only value kept from the running one
    applied: tuple[str, ...]  # keys whose new value takes effect now
    needs_restart: tuple[str, ...]  # keys that changed in the file but wait for a restart

    def summary(self) -> str:
        applied = ", ".join(self.applied) if self.applied else "nothing changed"
        text = f"config reloaded: {applied}"
        if self.needs_restart:
            text += f"; needs a restart to take effect: {', '.join(self.needs_restart)}"
        return text


def plan_reload(running: HealbotConfig, loaded: HealbotConfig) -> ReloadPlan:
    needs_restart = [k for k in RESTART_ONLY_GENERAL if getattr(running, k) != getattr(loaded, k)]
    if running.claude != loaded.claude:
        needs_restart.append("claude")
    needs_restart += [
        f"approval.{k}"
        for k in RESTART_ONLY_APPROVAL
        if getattr(running.approval, k) != getattr(loaded.approval, k)
    ]
    applied = [k for k in LIVE_GENERAL if getattr(running, k) != getattr(loaded, k)]
    applied += [
        f"approval.{k}" for k in LIVE_APPROVAL if getattr(running.approval, k) != getattr(loaded.approval, k)
    ]
    for name in sorted(set(running.services) | set(loaded.services)):
        before, after = running.services.get(name), loaded.services.get(name)
        if before != after:
            applied.append(
                f"services.{name}" + (" (added)" if before is None else " (removed)" if after is None else "")
            )
    kept_approval: ApprovalConfig = dataclasses.replace(
        loaded.approval, **{k: getattr(running.approval, k) for k in RESTART_ONLY_APPROVAL}
    )
    config = dataclasses.replace(
        loaded,
        path=running.path,
        claude=running.claude,
        approval=kept_approval,
        **{k: getattr(running, k) for k in RESTART_ONLY_GENERAL},
    )
    return ReloadPlan(config, tuple(applied), tuple(needs_restart))
