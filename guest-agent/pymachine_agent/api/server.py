"""Threaded HTTP servers on a unix socket (and optionally TCP), routing with Docker's version prefix."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import AgentError, no_space_message
from .http import ClientGone, Connection, HTTPError, Request
from .wire import ProtocolError, Timeouts

log = logging.getLogger("pymachine_agent.api")

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"
SERVER_VERSION = "0.1.0"
DRAIN_S = 15.0  # how long a stopping agent lets its requests in flight finish: bounded, a stuck one must not
# hold the restart

Handler = Callable[..., Any]
_VERSION_RE = re.compile(r"^/v(\d+\.\d+)(/.*)$")


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


class Router:
    """Method + path pattern → handler. `{name}` matches one segment, `{name:path}` may contain slashes
    (image references such as `localhost:5000/a/b:tag`).

    `hold(wait, answers_before)`: every route for which `answers_before(method, pattern)` is false calls
    `wait()` before its handler, which blocks until the engine can serve it or raises (Engine.wait_ready)."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler, str]] = []
        self._wait: Callable[[], None] | None = None
        self._answers_before: Callable[[str, str], bool] = lambda method, pattern: True

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        def repl(m: re.Match[str]) -> str:
            name, _, kind = m.group(1).partition(":")
            return f"(?P<{name}>.+)" if kind == "path" else f"(?P<{name}>[^/]+)"

        regex = re.compile("^" + re.sub(r"\{([^}]+)\}", repl, pattern) + "/?$")
        self.routes.append((method, regex, handler, pattern))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.add(method, pattern, fn)
            return fn

        return deco

    def hold(self, wait: Callable[[], None], answers_before: Callable[[str, str], bool]) -> None:
        self._wait = wait
        self._answers_before = answers_before

    def wait(self) -> None:
        if self._wait is not None:
            self._wait()

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str], bool] | None:
        """The handler, its path parameters, and whether it must wait for the engine (`hold`)."""
        path_matched = False
        for m, regex, handler, pattern in self.routes:
            found = regex.match(path)
            if not found:
                continue
            path_matched = True
            if m == method or (m == "GET" and method == "HEAD"):
                held = self._wait is not None and not self._answers_before(m, pattern)
                return handler, found.groupdict(), held
        if path_matched:
            raise HTTPError(405, f"method {method} not allowed on {path}")
        return None


PROTOCOL_PATHS = "/pymachine/"  # the host <-> guest protocol's (protocol.API_PREFIX), unversioned by Docker
CONTAINERS_REFUSED = (
    "{path}: the pymachine protocol is served to the VM's own processes only (the host agent, a shell in the "
    "machine), not to a container given the engine socket; it gets Docker's API"
)


def dispatch(router: Router, request: Request) -> None:
    """Strip and check the version prefix, run the handler, turn its result or error into a reply."""
    conn = request.conn
    path = request.path
    m = _VERSION_RE.match(path)
    if m:
        request.api_version, path = m.group(1), m.group(2)
        request.path = path
    try:
        if path.startswith(PROTOCOL_PATHS) and not conn.host_side:
            raise HTTPError(403, CONTAINERS_REFUSED.format(path=path))
        if request.api_version and not path.startswith(PROTOCOL_PATHS):
            v = version_tuple(request.api_version)
            if v > version_tuple(API_VERSION):
                raise HTTPError(
                    400,
                    f"client version {request.api_version} is too new. "
                    f"Maximum supported API version is {API_VERSION}",
                )
            if v < version_tuple(MIN_API_VERSION):
                raise HTTPError(
                    400,
                    f"client version {request.api_version} is too old. Minimum supported API version is "
                    f"{MIN_API_VERSION}, please upgrade your client to a newer version",
                )
        found = router.match(request.method, path)
        if found is None:
            raise HTTPError(404, f"page not found: {request.method} {request.path}")
        handler, params, held = found
        if held:
            router.wait()
        result = handler(request, **params)
        if conn.hijacked:
            return
        if result is not None and isinstance(result, int):
            request.drain()
            conn.send(result, b"", None)
        elif result is not None:
            status, obj = result
            request.drain()
            conn.send_json(status, obj, head_only=request.method == "HEAD")
    except ClientGone:
        raise
    except Exception as exc:
        _reply_error(request, exc)
    if not conn.hijacked:
        request.drain()  # a handler that wrote its own reply may have left the body: skip it, or close


def _reply_error(request: Request, exc: Exception) -> None:
    """Any failure of a handler becomes Docker's `{"message": ...}` with a status, never a silent close."""
    conn = request.conn
    if conn.hijacked:
        return
    if conn.replied:
        # failed mid-stream: the status is out, so the only honest signal left is closing the connection
        log.warning("%s %s failed after its reply started: %s", request.method, request.target, exc)
        conn.close_after = True
        return
    framing = exc if isinstance(exc, ProtocolError) else request.framing_error
    if framing is not None:
        # the body could not be read to its end (whatever the handler made of that): say so and close
        conn.close_after = True
        conn.send_error(framing.status, framing.message)
        return
    if isinstance(exc, AgentError):
        # every part's errors carry their Docker status code (pymachine_agent/errors.py)
        request.drain()
        if exc.status == 304:
            conn.send(304, b"", None)
        else:
            conn.send_error(exc.status, exc.message or str(exc))
        return
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        request.drain()  # not a bug: say what a person can do about it
        conn.send_error(507, no_space_message(exc))
        return
    # any bug becomes a 500 with the reason, not a dropped connection
    log.error("handler failed: %s %s\n%s", request.method, request.target, traceback.format_exc())
    conn.close_after = True
    request.drain()
    conn.send_error(500, f"{type(exc).__name__}: {exc}")


class InFlight:
    """The requests being handled now, so that an agent that stops answers them before it exits: a client
    whose request reached the old agent gets its reply, as dockerd's graceful shutdown gives it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: set[Connection] = set()

    @contextlib.contextmanager
    def request(self, conn: Connection) -> Iterator[None]:
        with self._lock:
            self._conns.add(conn)
        try:
            yield
        finally:
            with self._lock:
                self._conns.discard(conn)

    def unanswered(self) -> int:
        """Requests still being handled, but for streams (logs -f, events, wait, attach): their status is
        out and they may last for ever, so they end with the process, as a stopping dockerd's do."""
        with self._lock:
            return sum(1 for c in self._conns if not (c.streaming or c.hijacked))

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.unanswered():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def _make_handler(
    router: Router,
    extra_headers: list[tuple[str, str]],
    timeouts: Timeouts,
    in_flight: InFlight | None = None,
) -> type[socketserver.BaseRequestHandler]:
    in_flight = in_flight or InFlight()

    class _Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn = Connection(self.request, extra_headers, timeouts)
            # which listener took it: only the VM's own side may speak the host <-> guest protocol
            conn.host_side = getattr(self.server, "host_side", False) is True
            try:
                while True:
                    try:
                        request = conn.read_request()
                    except ProtocolError as exc:
                        # a malformed head: answer it (Go's status codes) and close, the stream cannot resync
                        log.info("bad request: %s %s", exc.status, exc.message)
                        conn.close_after = True
                        conn.send_error(exc.status, exc.message)
                        break
                    if request is None:
                        break
                    log.debug("%s %s", request.method, request.target)
                    with in_flight.request(conn):
                        dispatch(router, request)
                    if conn.hijacked or conn.close_after:
                        break
            except (ClientGone, ConnectionResetError, BrokenPipeError):
                pass
            except OSError as exc:
                log.debug("connection error: %s", exc)
            except Exception:  # a bug in the parser ends this connection, never the server
                log.exception("connection failed")
            finally:
                conn.close()

    return _Handler


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler], host_side: bool) -> None:
        self.host_side = host_side
        super().__init__(path, handler)


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    host_side = False  # `--tcp` (tests): a `--network host` container reaches the VM's loopback too


def standard_headers() -> list[tuple[str, str]]:
    return [
        ("Api-Version", API_VERSION),
        ("Docker-Experimental", "false"),
        ("Ostype", "linux"),
        ("Server", f"Docker/{SERVER_VERSION} (linux)"),
    ]


CONTAINER_SOCKET_NAME = "containers.sock"


def container_socket(socket_path: Path) -> Path:
    """The socket a container given the engine socket (`-v /var/run/docker.sock:...`) is bound to: Docker's
    API without the host <-> guest protocol, which only the listener at `socket_path` serves."""
    return Path(socket_path).with_name(CONTAINER_SOCKET_NAME)


class ApiServer:
    """Serves `router` on a unix socket (mode 0600), on the containers' socket beside it (the same API without
    /pymachine/..., also 0600; see `container_socket`) and optionally on a TCP address, one thread each."""

    def __init__(
        self,
        router: Router,
        socket_path: Path,
        tcp: tuple[str, int] | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.container_socket_path = container_socket(self.socket_path)
        headers = standard_headers()
        self.in_flight = InFlight()
        handler = _make_handler(router, headers, timeouts or Timeouts(), self.in_flight)
        self.handler = handler  # the fast path's relay serves its connections with it (relay.py)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_socket(self.socket_path)
        self.unix = self._listen(self.socket_path, handler, host_side=True)
        try:
            self._remove_stale_socket(self.container_socket_path)
            self.unix_containers = self._listen(self.container_socket_path, handler, host_side=False)
        except BaseException:
            self.unix.server_close()
            self.socket_path.unlink(missing_ok=True)
            raise
        self.tcp = _TCPServer(tcp, handler) if tcp else None
        self.threads: list[threading.Thread] = []

    @staticmethod
    def _listen(path: Path, handler: type[socketserver.BaseRequestHandler], host_side: bool) -> _UnixServer:
        old_umask = os.umask(0o177)
        try:
            server = _UnixServer(str(path), handler, host_side)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        return server

    @staticmethod
    def _remove_stale_socket(path: Path) -> None:
        if not (path.exists() or path.is_symlink()):
            return
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
        finally:
            probe.close()
        raise RuntimeError(f"another engine already serves {path}")

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self.tcp.server_address[:2] if self.tcp else None  # type: ignore[return-value]

    def start(self) -> None:
        for srv in (self.unix, self.unix_containers, self.tcp):
            if srv is None:
                continue
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        # the path first: shutdown() waits for the accept loop's next poll (seconds under TCG at load), and a
        # client that connected meanwhile was served by an agent about to exit, its reply cut when it did;
        # with the path gone it is refused, which the host agent's engine socket retries on the next agent
        for path in (self.socket_path, self.container_socket_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        for srv in (self.unix, self.unix_containers, self.tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()

    def drain(self, timeout: float = DRAIN_S) -> None:
        """After stop (and the relay's close): let the requests in flight get their replies, bounded."""
        if not self.in_flight.wait(timeout):
            log.warning(
                "stopping with %d requests unanswered after %.0f s", self.in_flight.unanswered(), timeout
            )
