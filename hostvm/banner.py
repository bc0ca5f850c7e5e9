"""Waiting for a booting guest's sshd banner through QEMU's user-mode (slirp) port forward.

slirp accepts on the host side at once and only then connects to the guest. What a probe sees depends on how
far the guest got:

- its network is not up yet: the guest drops slirp's SYN, which slirp retries with TCP back-off (seconds
  apart, growing); the probe hears nothing;
- its network is up but sshd does not listen: the guest resets, and slirp closes the probe at once;
- sshd listens: the banner comes once sshd has forked for the connection (seconds under TCG on a busy host).

One long probe started early therefore sat in the back-off for seconds after sshd listened (cold starts were
measured 2-3 s late at low load). Probes here overlap: fresh ones, one every FRESH_EVERY s, each given
FRESH_LIFE s, catch the moment sshd listens; one patient probe waits up to PATIENT_LIFE s, for a loaded host
where sshd's fork alone takes longer than a fresh probe lives. At most FRESH_MAX + 1 connections are open at
once, and at most one is opened per FRESH_EVERY.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass, field

FRESH_EVERY = 0.5
FRESH_LIFE = 2.0
FRESH_MAX = 4
PATIENT_LIFE = 30.0


@dataclass
class _Probe:
    sock: socket.socket
    until: float
    data: bytes = field(default=b"")


def wait(host: str, port: int, deadline: float) -> bool:
    """True once sshd's `SSH-2.0` identification line is read from host:port; False at `deadline`. One new
    connection per FRESH_EVERY at most: the patient probe when there is none, else a fresh one."""
    sel = selectors.DefaultSelector()
    patient: _Probe | None = None
    fresh: list[_Probe] = []
    next_open = 0.0
    try:
        while (now := time.monotonic()) < deadline:
            if now >= next_open:
                next_open = now + FRESH_EVERY
                if patient is None:
                    patient = _open(sel, host, port, min(deadline, now + PATIENT_LIFE))
                elif len(fresh) < FRESH_MAX and (probe := _open(sel, host, port, now + FRESH_LIFE)):
                    fresh.append(probe)
            ends = [p.until for p in (patient, *fresh) if p is not None]
            for key, _ in sel.select(max(0.0, min(next_open, deadline, *ends) - time.monotonic())):
                state = _read(key.data)
                if state == "banner":
                    return True
                if state == "closed":
                    key.data.until = 0.0  # dropped below
            now = time.monotonic()
            for probe in [p for p in (patient, *fresh) if p is not None and p.until <= now]:
                _close(sel, probe)
                patient = None if probe is patient else patient
                fresh = [p for p in fresh if p is not probe]
        return False
    finally:
        for key in list(sel.get_map().values()):
            _close(sel, key.data)
        sel.close()


def _open(sel: selectors.BaseSelector, host: str, port: int, until: float) -> _Probe | None:
    try:
        sock = socket.create_connection((host, port), timeout=2.0)
    except OSError:  # nothing listens on the host side (QEMU not up yet, or gone)
        return None
    sock.setblocking(False)
    probe = _Probe(sock, until)
    sel.register(sock, selectors.EVENT_READ, probe)
    return probe


def _read(probe: _Probe) -> str:
    """'banner', 'closed' (reset, closed, or not sshd), or 'more' (a partial line)."""
    try:
        chunk = probe.sock.recv(256)
    except BlockingIOError:
        return "more"
    except OSError:
        return "closed"
    if not chunk:
        return "closed"
    probe.data += chunk
    if b"\n" in probe.data or len(probe.data) >= 256:
        return "banner" if probe.data.startswith(b"SSH-2.0") else "closed"
    return "more"


def _close(sel: selectors.BaseSelector, probe: _Probe) -> None:
    try:
        sel.unregister(probe.sock)
    except (KeyError, ValueError):
        pass
    probe.sock.close()
