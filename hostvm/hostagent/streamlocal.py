"""Open a channel to a unix socket on the SSH server: paramiko has no `direct-streamlocal@openssh.com`.

Two ways, both measured in bench/forward.py:

* `open_direct` builds the CHANNEL_OPEN for `direct-streamlocal@openssh.com` (RFC 4254-style fields: socket
  path, reserved string "", reserved uint32 0) by mirroring `Transport.open_channel`. OpenSSH's sshd serves it
  when `AllowStreamLocalForwarding` is on (its default). It reuses paramiko's private bookkeeping, so it
  checks for what it needs and the caller falls back when a paramiko release moves it. Cost: one round
  trip, no process.
* `open_exec_bridge` runs a tiny Python bridge in the guest (`exec` channel, stdin/stdout ↔ AF_UNIX), the way
  docker-py's SSH transport runs `docker system dial-stdio`. Public API only, but every connection costs a
  process start in the guest — under TCG that is ~100+ ms, so it is the fallback, not the default.
"""

from __future__ import annotations

import shlex
import threading
import time

import paramiko
from paramiko.channel import Channel
from paramiko.common import CONNECTION_FAILED_CODE, MSG_CHANNEL_OPEN_FAILURE, cMSG_CHANNEL_OPEN
from paramiko.message import Message
from paramiko.ssh_exception import ChannelException, SSHException

KIND = "direct-streamlocal@openssh.com"
_NEEDED = (
    "lock",
    "_next_channel",
    "_channels",
    "channel_events",
    "channels_seen",
    "_send_user_message",
    "_handler_table",
)

# Larger than paramiko's 2 MiB default: a bulk transfer through an emulated guest is window-bound otherwise.
WINDOW_SIZE = 8 * 1024 * 1024
MAX_PACKET = 32768

_BRIDGE = r"""
import os, socket, sys, threading
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def up():
    while True:
        d = os.read(0, 65536)
        if not d: break
        s.sendall(d)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d: break
    os.write(1, d)
"""


def supported(transport: paramiko.Transport) -> bool:
    return all(hasattr(transport, name) for name in _NEEDED)


def _refusals(t: paramiko.Transport) -> dict[int, ChannelException]:
    """Each refused channel's own reason, by channel id. paramiko keeps only the last one, per transport
    (`saved_exception`), and `get_exception()` clears it: when two channel opens are refused at once (the
    engine socket's clients and the event stream all retrying while the guest agent restarts), one of them
    took the other's reason and the other saw none, so a refusal to be retried (2: no socket yet) read as a
    broken link, and the docker client got EOF. Recorded here as each refusal arrives, under paramiko's
    lock."""
    table: dict[int, ChannelException] | None = getattr(t, "_pymachine_refusals", None)
    if table is not None:
        return table
    with t.lock:
        table = getattr(t, "_pymachine_refusals", None)
        if table is None:
            table = {}
            parse = t._handler_table[MSG_CHANNEL_OPEN_FAILURE]

            def recorded(m: Message) -> None:
                peek = Message(m.asbytes())  # a copy: the handler reads `m` from its start
                chanid, reason = peek.get_int(), peek.get_int()
                with t.lock:
                    if chanid in t.channel_events:  # one being opened (not a stray)
                        table[chanid] = ChannelException(reason, CONNECTION_FAILED_CODE.get(reason, "?"))
                parse(m)

            t._handler_table[MSG_CHANNEL_OPEN_FAILURE] = recorded
            t._pymachine_refusals = table  # type: ignore[attr-defined]
    return table


def open_direct(transport: paramiko.Transport, path: str, timeout: float = 10.0) -> Channel:
    """A channel connected to the unix socket `path` on the server; raises SSHException when refused."""
    if not transport.active:
        raise SSHException("SSH session not active")
    if not supported(transport):
        raise SSHException("this paramiko version hides the channel bookkeeping direct-streamlocal needs")
    t = transport
    refusals = _refusals(t)
    with t.lock:
        window = t._sanitize_window_size(WINDOW_SIZE)
        packet = t._sanitize_packet_size(MAX_PACKET)
        chanid = t._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string(KIND)
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(path)
        m.add_string("")
        m.add_int(0)
        chan = Channel(chanid)
        t._channels.put(chanid, chan)
        t.channel_events[chanid] = event = threading.Event()
        t.channels_seen[chanid] = True
        chan._set_transport(t)
        chan._set_window(window, packet)
    t._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not event.wait(0.05):
        if not t.active:
            raise _as_ssh_error(t.get_exception(), "SSH session ended while opening a channel")
        if time.monotonic() > deadline:
            raise SSHException(f"timed out opening a channel to {path}")
    opened = t._channels.get(chanid)
    with t.lock:
        refused = refusals.pop(chanid, None)
    if refused is not None:
        raise refused
    if opened is None:
        raise _as_ssh_error(t.get_exception(), f"the server refused a channel to {path}")
    return opened


def _as_ssh_error(exc: BaseException | None, fallback: str) -> SSHException:
    """paramiko keeps whatever ended the session (EOFError, OSError…); callers handle SSHException."""
    if isinstance(exc, SSHException):
        return exc
    return SSHException(f"{fallback}: {exc!r}" if exc else fallback)


def open_exec_bridge(transport: paramiko.Transport, path: str, python: str = "python3") -> Channel:
    """A session channel whose stdin/stdout are joined to the unix socket `path` by a guest-side bridge."""
    chan = transport.open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET)
    chan.exec_command(f"{python} -c {shlex.quote(_BRIDGE)} {shlex.quote(path)}")
    return chan


class Opener:
    """Opens channels to one guest socket: direct-streamlocal first, the exec bridge once that is refused."""

    def __init__(self, path: str, mode: str = "auto") -> None:
        self.path = path
        self.mode = mode  # auto | direct | exec
        self._direct_failed = False

    def open(self, transport: paramiko.Transport, timeout: float = 10.0) -> Channel:
        if self.mode == "exec" or (self.mode == "auto" and self._direct_failed):
            return open_exec_bridge(transport, self.path)
        try:
            return open_direct(transport, self.path, timeout)
        except ChannelException as exc:
            # 1 = administratively prohibited (AllowStreamLocalForwarding no), 3 = unknown channel type: the
            # server will never serve it, so bridge instead. 2 (connect failed: no socket yet) is re-raised,
            # the bridge could not reach a missing socket either.
            if self.mode == "direct" or exc.code not in (1, 3):
                raise
            self._direct_failed = True
            return open_exec_bridge(transport, self.path)
