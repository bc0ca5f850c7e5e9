"""A machine's graceful power-off, as `stop --shutdown` (and a stop that cannot save) asks for it: the ACPI
button and the guest's own poweroff over SSH, then a wait bounded by the stop's deadline. The caller forces
the VM off when the deadline passes (machines.stop)."""

from __future__ import annotations

import logging
import time

from . import ssh
from .drivers import Driver, DriverState

log = logging.getLogger(__name__)
POWEROFF = "/sbin/pymachine-poweroff"


def power_off(name: str, drv: Driver, deadline: float) -> None:
    """Ask the guest to power off both ways at once and wait for it until `deadline`. The ACPI button costs
    the guest nothing (its init runs the poweroff; an SSH handshake takes seconds of emulated crypto on a
    loaded TCG host); SSH reaches a guest that does not watch its button yet (early in its boot). The guest's
    poweroff runs once however often it is asked (/sbin/pymachine-poweroff)."""
    try:
        if drv.paused(name):  # the resource saver froze it: a frozen guest hears neither
            drv.unpause(name)
        if drv.capabilities.graceful_shutdown:
            drv.request_shutdown(name)
        if drv.state(name) is DriverState.RUNNING:
            ask_poweroff(name, deadline)
    except Exception as exc:  # noqa: BLE001 - the wait below, and the force at its end, still stop it
        log.warning("asking machine '%s' to power off: %s", name, exc)
    again = drv.capabilities.graceful_shutdown  # once more half-way: a guest may have missed the first press
    half = time.monotonic() + (deadline - time.monotonic()) / 2
    while time.monotonic() < deadline and drv.state(name) is DriverState.RUNNING:
        if again and time.monotonic() >= half:
            drv.request_shutdown(name)
            again = False
        time.sleep(0.3)


def ask_poweroff(name: str, deadline: float) -> None:
    """The guest's poweroff over SSH, never past `deadline`: a guest that accepts the command and then stalls
    must not hold the stop (the force at the deadline ends it)."""

    def left() -> float:
        return max(1.0, min(20.0, deadline - time.monotonic()))

    try:
        client = ssh.connect(name, timeout=left())
    except Exception as exc:  # noqa: BLE001 - a guest going down (the button) drops the handshake
        log.debug("poweroff over SSH of %s: %s", name, exc)
        return
    try:
        # Wait for the command's own exit: closing the session first could kill it before it detaches.
        _, out, _ = client.exec_command(POWEROFF, timeout=left())
        if not out.channel.status_event.wait(left()):
            log.debug("poweroff over SSH of %s: no exit status in time", name)
    except Exception as exc:  # noqa: BLE001 - the link may drop as the guest goes down: that is success
        log.debug("poweroff of %s: %s", name, exc)
    finally:
        client.close()
