"""A systemd unit, driven by `systemctl show` (status) and `systemctl restart`.

    [services.web.manager]
    type = "systemd"
    unit = "web.service"     # required
    user = false             # optional: true adds --user (the user's own service manager)
    systemctl = "systemctl"  # optional: path to systemctl
    timeout_s = 90           # optional: limit for each systemctl call and for the unit to come up

systemd's own protection is respected: a unit that hit its start limit or failed is reported FATAL with the
reason, and a restart that systemd refuses says why and what to do. systemd 252 keeps the first failure's
Result (e.g. exit-code) when its automatic restarts run into the start limit, so a failed unit with
Restart= set and at least StartLimitBurst-1 restarts is read as "hit its start limit" too. A masked unit
is STOPPED with "masked" in its detail (systemd refuses to start it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.errors import RestartFailed, ServiceError
from bot.models import ServiceState, ServiceStatus
from healers.services.base import (
    CommandRunner,
    Options,
    missing_binary,
    subprocess_runner,
    tail,
    wait_until_settled,
)

DEFAULT_TIMEOUT_S = 90.0
PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "NRestarts",
    "ExecMainCode",
    "ExecMainStatus",
    "StatusText",
    "Restart",
    "StartLimitBurst",
)
_ACTIVE_STATES = {
    "active": ServiceState.RUNNING,
    "reloading": ServiceState.RUNNING,
    "activating": ServiceState.STARTING,
    "deactivating": ServiceState.STOPPED,
    "inactive": ServiceState.STOPPED,
    "failed": ServiceState.FATAL,
}
_RESULTS = {
    "exit-code": "the main process exited with a non-zero code",
    "signal": "the main process was killed by a signal",
    "core-dump": "the main process dumped core",
    "timeout": "a start or stop timeout was hit",
    "watchdog": "the watchdog was not fed",
    "start-limit-hit": "it hit its start limit (restarted too often); "
    "run `systemctl reset-failed UNIT` once the cause is fixed",
    "resources": "systemd could not set up its resources",
    "oom-kill": "it was killed by the OOM killer",
    "protocol": "it violated the service protocol",
}
# What systemctl says when polkit (or its absence) refuses a restart to a user other than root.
NOT_AUTHORIZED = ("Interactive authentication required", "Access denied")
NOT_AUTHORIZED_HINT = (
    "this user may not restart UNIT: list UNIT in deploy/polkit-1/rules.d/50-healbot.rules and install it "
    "in /etc/polkit-1/rules.d/"
)
MASKED_HINT = "systemd refuses to start it; `systemctl unmask UNIT` allows it again"


class SystemdManager:
    def __init__(
        self,
        service: str,
        *,
        unit: str,
        user: bool = False,
        systemctl: str = "systemctl",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        runner: CommandRunner | None = None,
    ) -> None:
        self.service = service
        self.unit = unit
        self.user = user
        self.systemctl = systemctl
        self.timeout_s = timeout_s
        self.run = runner or subprocess_runner(timeout_s)

    @classmethod
    def from_options(cls, service: str, options: Mapping[str, object], config_path: str) -> SystemdManager:
        opts = Options(service, options, config_path)
        unit = opts.required_string("unit")
        if unit.startswith("-") or "/" in unit:
            raise opts.error("unit", f"must be a unit name such as web.service, not {unit!r}")
        manager = cls(
            service,
            unit=unit,
            user=opts.boolean("user", False),
            systemctl=opts.string("systemctl", "systemctl") or "systemctl",
            timeout_s=opts.number("timeout_s", DEFAULT_TIMEOUT_S),
        )
        opts.finish()
        return manager

    @property
    def label(self) -> str:
        return f"systemd: {self.unit}"

    def argv(self, *args: str) -> list[str]:
        scope = ["--user"] if self.user else []
        return [self.systemctl, *scope, *args]

    def show_argv(self) -> list[str]:
        return self.argv("show", self.unit, "--no-pager", f"--property={','.join(PROPERTIES)}")

    def status(self) -> ServiceStatus:
        rc, stdout, stderr = self.run(self.show_argv())
        if rc != 0:
            raise ServiceError(
                f"{self.label}: `systemctl show` failed (exit {rc}): {tail(stderr or stdout, 300)}"
            )
        return parse_show(stdout, self.unit)

    def restart(self, settle_s: float) -> ServiceStatus:
        try:
            before = self.status()
        except ServiceError as exc:
            raise RestartFailed(f"cannot restart: {exc}") from exc
        rc, stdout, stderr = self._run_for_restart()
        if rc != 0:
            problem = tail(stderr or stdout, 300)
            message = f"{self.label}: `systemctl restart` failed (exit {rc}): {problem}"
            if any(refusal in problem for refusal in NOT_AUTHORIZED):
                message += f"; {NOT_AUTHORIZED_HINT.replace('UNIT', self.unit)}"
            if before.state is ServiceState.FATAL:
                message += f"; before the restart it was {before.detail}"
            raise RestartFailed(message)
        old_pid = before.pid if before.state is ServiceState.RUNNING else None
        return wait_until_settled(
            self.status, label=self.label, settle_s=settle_s, start_timeout_s=self.timeout_s, old_pid=old_pid
        )

    def log_paths(self) -> Sequence[str]:
        return ()  # systemd services log to the journal (a journald source reads it), not to files

    def check(self) -> str | None:
        missing = missing_binary(
            self.systemctl, label="systemctl binary", hint="this host has no systemd tools"
        )
        if missing is not None:
            return missing
        try:
            rc, stdout, stderr = self.run(self.show_argv())
        except ServiceError as exc:
            return str(exc)
        if rc != 0:
            problem = tail(stderr or stdout, 300)
            hint = ""
            if "has not been booted with systemd" in problem or "Failed to connect to bus" in problem:
                scope = (
                    "the user's systemd (is lingering on? is XDG_RUNTIME_DIR set?)"
                    if self.user
                    else "systemd"
                )
                hint = f": {scope} is not running here; choose another manager type"
            return f"{self.label}: `systemctl show` failed (exit {rc}): {problem}{hint}"
        properties = parse_properties(stdout)
        load_state = properties.get("LoadState")
        if load_state == "not-found":
            return f"{self.label}: unit not found; check the name with `systemctl list-units --all`"
        if load_state == "masked":
            return f"{self.label}: unit is masked: {MASKED_HINT.replace('UNIT', self.unit)}"
        if properties.get("ActiveState") == "failed":
            detail = parse_show(stdout, self.unit).detail
            return (
                f"{self.label}: unit has failed: {detail}; see `journalctl -u {self.unit}`, fix the cause, "
                f"then `systemctl reset-failed {self.unit}` and start it"
            )
        return None

    def _run_for_restart(self) -> tuple[int, str, str]:
        try:
            return self.run(self.argv("restart", self.unit))
        except ServiceError as exc:
            raise RestartFailed(f"{self.label}: {exc}") from exc


def parse_properties(text: str) -> dict[str, str]:
    """`systemctl show` prints one `Name=Value` per line; values may be empty or contain '='."""
    properties: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            properties[name.strip()] = value
    return properties


def parse_show(text: str, unit: str) -> ServiceStatus:
    props = parse_properties(text)
    if props.get("LoadState") == "not-found":
        return ServiceStatus(ServiceState.UNKNOWN, detail=f"unit {unit} not found")
    if props.get("LoadState") == "masked":
        return ServiceStatus(
            ServiceState.STOPPED, detail=f"unit {unit} is masked: {MASKED_HINT.replace('UNIT', unit)}"
        )
    active, sub, result = props.get("ActiveState", ""), props.get("SubState", ""), props.get("Result", "")
    state = _ACTIVE_STATES.get(active, ServiceState.UNKNOWN)
    if active == "activating" and sub == "auto-restart":
        state = ServiceState.CRASH_LOOP  # between two automatic restarts after a failure
    pid = _int(props.get("MainPID")) or None
    restarts = _int(props.get("NRestarts"))
    detail = f"{active} ({sub})" if sub else active or "unknown"
    if result and result != "success":
        detail += f", Result={result}: {_RESULTS.get(result, result)}"
        if result == "exit-code" and props.get("ExecMainStatus"):
            detail += f" ({props['ExecMainStatus']})"
        if result != "start-limit-hit" and _gave_up_restarting(props, restarts):
            detail += f"; systemd gave up restarting it: {_RESULTS['start-limit-hit']}"
    if restarts:
        detail += f", restarted {restarts} times by systemd"
    if props.get("StatusText"):
        detail += f", status: {props['StatusText']}"
    return ServiceStatus(state, pid=pid, restarts=restarts, detail=detail.replace("UNIT", unit))


def _gave_up_restarting(props: Mapping[str, str], restarts: int | None) -> bool:
    """Failed although Restart= would restart it, after at least StartLimitBurst-1 automatic restarts."""
    burst = _int(props.get("StartLimitBurst"))
    automatic = props.get("Restart", "no") not in ("", "no")
    return (
        props.get("ActiveState") == "failed"
        and automatic
        and bool(restarts)
        and (burst is None or (restarts or 0) + 1 >= burst)
    )


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None
