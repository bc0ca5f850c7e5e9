"""The engine socket's serial path, guest end: the API served on the virtio-serial port of the engine.

On a local machine the VM has one virtserialport named `org.pymachine.engine` (the host end is a unix socket
QEMU holds in the machine folder, which only the host agent connects to). No udev in the guest, so the
port is found by its name in /sys/class/virtio-ports/*/name (the node is /dev/vportNpM, root's, mode 0600, and
refused by every container's device allowlist). The channels of serialmux.py each carry one docker.sock
connection; each is bridged to a socketpair whose other end the unix socket's own HTTP handler serves, exactly
like a connection to /run/pymachine/docker.sock (and the fast path's relay): nothing of the API differs.

One reader thread drains the non-blocking port into one buffer per wake-up (a read returns one 4 KiB page of
the port's queue) and feeds the multiplexer; frames go out in single writes of at most 32 KiB. With no host
client connected the port polls readable at EOF forever, so the reader then drops every channel and looks
again every HOST_POLL_S.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import socketserver
import threading
import time
from pathlib import Path

from .. import serialmux

log = logging.getLogger("pymachine_agent.api.serialport")
SYSFS = Path("/sys/class/virtio-ports")
HOST_POLL_S = 0.5  # no host client: how often to look for one (the host agent connects once per start)
WRITE_TIMEOUT_S = 30.0  # a host client that reads nothing for this long is gone: fail the write
DRAIN_MAX = 1 << 20  # bytes read per wake-up before the frames are handled
BRIDGE_CHUNK = 256 * 1024


def find_port(name: str = serialmux.PORT_NAME, sysfs: Path = SYSFS, dev: Path = Path("/dev")) -> Path | None:
    """/dev/vportNpM of the port called `name`, or None (no such device: the machine has no serial path)."""
    try:
        entries = sorted(sysfs.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            if (entry / "name").read_text().strip() == name:
                return dev / entry.name
        except OSError:
            continue
    return None


class _PortListener:
    """What the API's handler sees as the server of a serial channel: only the host's end of the VM's port
    reaches it, so it may speak the host <-> guest protocol (server.py)."""

    host_side = True


_HOST_SIDE = _PortListener()


class SerialPort:
    def __init__(self, handler: type[socketserver.BaseRequestHandler], path: Path | None = None) -> None:
        self.handler = handler
        self.path = path
        self.fd = -1
        self.mux = serialmux.Mux(self._write, "guest", on_open=self._serve, on_state=self._state)
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._own_fd = False
        self.served = 0

    def start(self, fd: int | None = None) -> bool:
        """Serve the port (or `fd`, the tests' stand-in for it) on a thread; False when the VM has none."""
        path = self.path or (None if fd is not None else find_port())
        if fd is not None:
            os.set_blocking(fd, False)
            self.fd = fd
        elif path is None:
            log.info("serial path: no port %s (the host uses the other paths)", serialmux.PORT_NAME)
            return False
        else:
            try:
                self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                log.warning("serial path: cannot open %s: %s", path, exc)
                return False
            self._own_fd = True
        self.path = path
        self._reader = threading.Thread(target=self._read_loop, name="serial-port", daemon=True)
        self._reader.start()
        log.info("serial path: serving the engine on %s", path)
        return True

    def close(self) -> None:
        """Stop reading (within a second) and drop every channel; the port's fd is closed if ours."""
        self._stop.set()
        self.mux.reset("the guest agent stops")
        if self._reader is not None:
            self._reader.join(2.0)
            if self._own_fd and not self._reader.is_alive():
                os.close(self.fd)
            self._reader = None

    def _state(self, state: str, why: str) -> None:
        log.info("serial path: %s%s", state, f" ({why})" if why else "")

    # -- the port ------------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(1000):
                continue
            buf, eof = bytearray(), False
            while len(buf) < DRAIN_MAX:
                try:
                    chunk = os.read(self.fd, 65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    log.warning("serial path: reading the port: %s", exc)
                    eof = True
                    break
                if not chunk:
                    eof = True
                    break
                buf += chunk
            if buf:
                self.mux.feed(buf)
            if eof:  # no host client (now): its channels are gone; a new one starts with a hello
                self.mux.reset("the host end closed")
                self.mux.decoder.unsync()
                self._stop.wait(HOST_POLL_S)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        poller: select.poll | None = None
        while view:
            try:
                view = view[os.write(self.fd, view) :]
                continue
            except BlockingIOError:
                pass
            if poller is None:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
            events = poller.poll(200)
            if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in events):
                raise ConnectionResetError("no host client on the serial port")
            if self._stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError("the host does not read the serial port")

    # -- one channel = one API connection ------------------------------------------------------------------
    def _serve(self, ch: serialmux.Channel) -> None:
        threading.Thread(target=self._bridge, args=(ch,), name=f"serial-{ch.id}", daemon=True).start()

    def _bridge(self, ch: serialmux.Channel) -> None:
        ours, theirs = socket.socketpair()
        self.served += 1
        api = threading.Thread(
            target=self._handle, args=(theirs, ch.id), name=f"serial-api-{ch.id}", daemon=True
        )
        api.start()
        inbound = threading.Thread(
            target=_port_to_socket, args=(ch, ours), name=f"serial-in-{ch.id}", daemon=True
        )
        inbound.start()
        try:
            while data := ours.recv(BRIDGE_CHUNK):
                ch.sendall(data)
        except OSError:
            pass
        finally:
            try:
                ch.shutdown_write()
            except OSError:
                pass
        inbound.join()
        api.join()
        ch.close()
        ours.close()

    def _handle(self, sock: socket.socket, cid: int) -> None:
        try:
            self.handler(sock, ("serial", cid), _HOST_SIDE)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - one connection's failure, never the port's
            log.exception("serial path: channel %d failed", cid)
        finally:
            sock.close()


def _port_to_socket(ch: serialmux.Channel, sock: socket.socket) -> None:
    try:
        while data := ch.recv(BRIDGE_CHUNK):
            sock.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
