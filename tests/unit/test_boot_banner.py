"""Waiting for sshd's banner through a slirp-like forward (hostvm/banner.py), against real loopback sockets.

The listener here plays QEMU's slirp: it accepts every connection at once, then behaves as the guest would at
that moment: silent (the guest's network is not up: slirp's SYN to it is lost and retried with back-off), a
reset (nothing listens yet), or sshd's banner, possibly late (sshd forking under TCG on a busy host).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pymachine.hostvm import banner, ssh

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


@contextmanager
def fake_forward(answer: Callable[[int], tuple[str, float]]) -> Iterator[tuple[int, list[float]]]:
    """A listener on loopback; `answer(n)` for the n-th connection (from 0) says what it gets: ("silent", 0),
    ("reset", 0), ("banner", delay_s) or ("http", delay_s). Yields (port, accept times)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            what, delay = answer(len(accepted))
            accepted.append(time.monotonic())
            if what == "reset":
                conn.close()
            elif what in ("banner", "http"):
                line = BANNER if what == "banner" else b"HTTP/1.1 400 Bad Request\r\n"
                threading.Timer(delay, _send, (conn, line)).start()
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in held:
            conn.close()


def _send(conn: socket.socket, line: bytes) -> None:
    try:
        conn.sendall(line)
    except OSError:
        pass  # the probe was given up: what a real sshd sees too


def test_a_probe_stuck_in_the_syn_back_off_does_not_hide_the_banner() -> None:
    # the first connections hit a guest without network (silent for as long as they stay open); sshd listens
    # from the fourth on. One long probe never hears anything before the deadline; fresh probes do.
    with fake_forward(lambda n: ("silent", 0) if n < 3 else ("banner", 0)) as (port, accepted):
        assert ssh.wait_banner(port, time.monotonic() + 20)
    assert len(accepted) >= 4


def test_a_banner_slower_than_a_fresh_probe_lives_is_still_read() -> None:
    # a loaded host: each banner comes later than a fresh probe lives; the patient probe waits for it
    slow = banner.FRESH_LIFE * 1.5
    with fake_forward(lambda n: ("banner", slow)) as (port, _):
        assert banner.wait("127.0.0.1", port, time.monotonic() + slow + 30)


def test_resets_are_retried_gently_and_the_deadline_ends_the_wait() -> None:
    # nothing listens in the guest: every connection is reset at once. The wait retries at most once per
    # FRESH_EVERY and gives up at the deadline.
    with fake_forward(lambda n: ("reset", 0)) as (port, accepted):
        started = time.monotonic()
        assert banner.wait("127.0.0.1", port, started + 2) is False
        ended = time.monotonic()
    assert ended >= started + 2
    assert 2 <= len(accepted) <= (ended - started) / banner.FRESH_EVERY + 2


def test_no_listener_at_all_is_no_banner() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        assert banner.wait("127.0.0.1", port, time.monotonic() + 1.5) is False


def test_something_else_than_sshd_answering_is_no_banner() -> None:
    with fake_forward(lambda n: ("http", 0)) as (port, accepted):
        assert banner.wait("127.0.0.1", port, time.monotonic() + 1.5) is False
    assert accepted
