"""The host agent's listening sockets outlive a kill -9 of the agent: its supervisor holds a copy of each.

Without this, the engine socket and every published port refuse connections from the agent's death until its
successor has bound them again, which it can only do for a port once the guest agent has replayed its port
table over a new SSH link (seconds on a loaded host). With it, the kernel keeps accepting into the held
sockets' backlogs, the successor (a fork of the supervisor, so it inherits the copies) takes them over at its
start and serves the queued connections as soon as its SSH link is up; a client only sees a slower answer.

The protocol is one SOCK_SEQPACKET pair between supervisor and agent, one JSON message per packet:
`{"op": "hold", "key": K, "info": {...}}` with the listener's fd (SCM_RIGHTS), and `{"op": "drop", "key": K}`
when the agent closes that listener. Keys: "engine", or "tcp 127.0.0.1 8080" for a published port, whose
`info` is the port rule (ports.PortRule.to_json()). Outside a supervisor (tests, an agent started by hand)
every call here is a no-op.
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
import sys
from typing import Any

log = logging.getLogger(__name__)
ENGINE = "engine"
DISABLE_ENV = "PYMACHINE_HANDOVER"  # "0": hand nothing over (only to measure what this buys)
_MAX_MESSAGE = 4096
_MAX_ACTIVATION = 1 << 20
_MAX_FDS = 250  # SCM_RIGHTS carries at most 253 descriptors


def port_key(key: tuple[str, str, int]) -> str:
    proto, host_ip, host_port = key
    return f"{proto} {host_ip} {host_port}"


class Keeper:
    """The supervisor's side: the held listeners, and the pair's end it reads the agent's messages from."""

    def __init__(self) -> None:
        # SEQPACKET where there is one (Linux); macOS has only datagrams, which keep message bounds too
        kind = socket.SOCK_SEQPACKET if sys.platform == "linux" else socket.SOCK_DGRAM
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, kind)
        self.ours.setblocking(False)
        self.held: dict[str, tuple[int, dict[str, Any]]] = {}

    def drain(self) -> None:
        """Read every message the agent sent (a dead agent's are still queued): keep or drop listeners."""
        fds = array.array("i")
        while True:
            try:
                data, ancdata, _flags, _addr = self.ours.recvmsg(
                    _MAX_MESSAGE, socket.CMSG_SPACE(fds.itemsize), getattr(socket, "MSG_CMSG_CLOEXEC", 0)
                )
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            got = _fds_in(ancdata)
            for fd in got:
                os.set_inheritable(fd, False)  # where MSG_CMSG_CLOEXEC is missing
            try:
                message = json.loads(data)
                op, key = message["op"], str(message["key"])
            except (ValueError, KeyError, TypeError):
                for fd in got:
                    os.close(fd)
                continue
            old = self.held.pop(key, None)
            if old is not None:
                os.close(old[0])
            if op == "hold" and got:
                self.held[key] = (got[0], dict(message.get("info") or {}))
                got = got[1:]
            for fd in got:
                os.close(fd)

    def fileno(self) -> int:
        return self.ours.fileno()

    def enter_agent(self) -> None:
        """In the forked agent: the held listeners become its own (taken by `take`/`held_ports`), and its
        end of the pair is where `hold`/`drop` write."""
        self.ours.close()
        self._adopt(self.held)

    def _adopt(self, held: dict[str, tuple[int, dict[str, Any]]]) -> None:
        global _channel
        if os.environ.get(DISABLE_ENV) == "0":  # bench/hostagent_respawn.py's peer: the agent as before
            self.theirs.close()
            for fd, _info in held.values():
                os.close(fd)
            held.clear()
            return
        _channel = self.theirs
        _inherited.clear()
        for key, (fd, info) in held.items():
            try:
                _inherited[key] = (socket.socket(fileno=fd), info)
            except OSError:
                continue
        held.clear()

    # -- a pre-connected spare agent (spare.py), forked before the listeners it will take were all held --
    def enter_spare(self) -> None:
        """In the spare, right after its fork: the copies it inherited may be stale by its activation."""
        self.ours.close()
        for fd, _info in self.held.values():
            os.close(fd)
        self.held.clear()

    def send_held(self, to: socket.socket) -> None:
        """Supervisor: activate a spare, handing it a copy of every held listener in one message."""
        keys = list(self.held)
        if len(keys) > _MAX_FDS:
            raise OSError(f"{len(keys)} listeners are more than one message carries")
        data = json.dumps([[key, self.held[key][1]] for key in keys]).encode()
        fds = array.array("i", [self.held[key][0] for key in keys])
        to.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if keys else [])

    def enter_from(self, sock: socket.socket) -> bool:
        """The spare, activated: the listeners `send_held` passed become its own; False if the supervisor
        is gone (end of file) instead."""
        space = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
        data, ancdata, _flags, _addr = sock.recvmsg(_MAX_ACTIVATION, space)
        got = _fds_in(ancdata)
        if not data:
            for fd in got:
                os.close(fd)
            return False
        entries = json.loads(data)
        self._adopt({key: (fd, info) for (key, info), fd in zip(entries, got, strict=True)})
        return True

    def close(self) -> None:
        for fd, _info in self.held.values():
            os.close(fd)
        self.held.clear()
        self.ours.close()
        self.theirs.close()


def _fds_in(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    size = array.array("i").itemsize
    return [
        fd
        for level, kind, raw in ancdata
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
        for fd in array.array("i", raw[: len(raw) - len(raw) % size])
    ]


# -- the agent's side ---------------------------------------------------------------------------------------
_channel: socket.socket | None = None
_inherited: dict[str, tuple[socket.socket, dict[str, Any]]] = {}


def _send(message: dict[str, Any], sock: socket.socket | None = None) -> None:
    if _channel is None:
        return
    data = json.dumps(message).encode()
    fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))] if sock else []
    try:
        _channel.sendmsg([data], fds)
    except OSError as exc:  # the supervisor is gone: the listener just is not kept across a kill
        log.info("listener %s not handed to the supervisor: %s", message.get("key"), exc)


def hold(key: str, sock: socket.socket, info: dict[str, Any] | None = None) -> None:
    """Give the supervisor a copy of listener `key`: a successor inherits it if this agent dies."""
    _send({"op": "hold", "key": key, "info": info or {}}, sock)


def drop(key: str) -> None:
    """This agent closed listener `key` on purpose: the supervisor lets its copy go too."""
    _send({"op": "drop", "key": key})


def take(key: str) -> socket.socket | None:
    """The listener `key` a killed predecessor left with the supervisor, now this agent's; None if none."""
    held = _inherited.pop(key, None)
    return held[0] if held is not None else None


def held_ports() -> list[tuple[dict[str, Any], socket.socket]]:
    """The published-port listeners inherited (port rule, socket), taken by the caller."""
    keys = [key for key in _inherited if key != ENGINE]
    return [(info, sock) for info, sock in (_pop(key) for key in keys)]


def _pop(key: str) -> tuple[dict[str, Any], socket.socket]:
    sock, info = _inherited.pop(key)
    return info, sock
