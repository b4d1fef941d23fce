"""healbot in a monitoring engine: `/metrics` for Prometheus and an Alertmanager webhook, both off by default.

    metrics        the collector (read at scrape time) and prometheus_client's HTTP server
    view           the running daemon as the collector reads it
    alerts         the Alertmanager v4 payload, validated
    alert_intake   alerts into incidents (and resolutions into closes or verdict evidence)
    alert_server   the authenticated, size-capped HTTP receiver

`Observability` is what the daemon starts and stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.config import ALERTS_TOKEN_ENV
from bot.errors import HealbotError
from bot.observability.alert_intake import AlertIntake
from bot.observability.alert_server import AlertServer

if TYPE_CHECKING:
    from bot.daemon import Daemon
    from bot.observability.metrics import MetricsServer

log = logging.getLogger("healbot.observability")

__all__ = ["Observability"]


class Observability:
    def __init__(self, daemon: Daemon, environ: Mapping[str, str] | None = None) -> None:
        self._daemon = daemon
        self._environ = os.environ if environ is None else environ
        self.intake = AlertIntake(daemon.pipeline)
        self.metrics: MetricsServer | None = None
        self.alerts: AlertServer | None = None

    async def start(self) -> None:
        """Start what the config enables; a server that cannot start is a HealbotError naming why."""
        config = self._daemon.config
        if config.alerts.enabled:
            token = self._environ.get(ALERTS_TOKEN_ENV, "")
            if not token:
                raise HealbotError(
                    f"[alerts] enabled = true needs the webhook's bearer token in {ALERTS_TOKEN_ENV}"
                )
            self.alerts = AlertServer(
                config.alerts.host,
                config.alerts.port,
                token=token,
                max_body_bytes=config.alerts.max_body_bytes,
                receive=self.intake.receive,
                loop=asyncio.get_running_loop(),
            )
            await asyncio.to_thread(self.alerts.start)
        if config.metrics.enabled:
            # imported only when enabled: a healbot without /metrics does not load prometheus_client
            from bot.observability.metrics import MetricsServer, build_registry
            from bot.observability.view import DaemonView

            self.metrics = MetricsServer(
                build_registry(DaemonView(self._daemon)), config.metrics.host, config.metrics.port
            )
            try:
                await asyncio.to_thread(self.metrics.start)
            except HealbotError:
                await self.stop()
                raise

    async def polled(self) -> None:
        try:
            await self.intake.after_poll()
        except HealbotError as exc:  # the state database refused: the next poll tries again
            log.warning("alerts: %s", exc)

    async def stop(self) -> None:
        for server in (self.alerts, self.metrics):
            if server is not None:
                await asyncio.to_thread(server.stop)
        self.alerts = self.metrics = None
