"""systemd's readiness protocol (sd_notify(3)) for a `Type=notify` unit: one datagram to $NOTIFY_SOCKET.

deploy/healbot.service is `Type=notify`: systemd counts healbot as started only once it says READY=1,
which the daemon does once its signal handlers are installed. Until then `systemctl reload` waits; with
`Type=simple` a reload in the first second (Python still importing) killed healbot by the default action
of SIGHUP, and systemd, counting SIGHUP as a clean exit, did not restart it. Outside systemd
(NOTIFY_SOCKET unset) this does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1") to systemd; False when not run by systemd or the send failed."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError as exc:
            log.warning("could not tell systemd %s via NOTIFY_SOCKET: %s", state, exc)
            return False
    return True
