"""The host agent: one long-lived process per running machine (`python -m pymachine.hostvm.hostagent NAME`).

It owns the SSH link (transport.Link), the engine socket (sockforward), the published-port listeners
(portforward, driven by the guest's port events through ports.PortTable), the control socket, the events
file, and the guest clock after host sleep. Everything reconnects on its own; nothing here exits on a fault
except a second agent for the same machine (the pid-file lock says one is alive already).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from pymachine_agent import protocol

from .. import paths
from . import (
    dockerd,
    fastpath,
    guestapi,
    idle,
    lifeline,
    memback,
    parking,
    ports,
    provision,
    qemufwd,
    serialpath,
    sshfs,
    syncshare,
)
from .control import ControlServer
from .events import EventWriter
from .fswatch import FsWatcher
from .logfile import rotating_log
from .portforward import BindError, Forwarder
from .sockforward import GUEST_SOCKET, SocketForward
from .startup import StartupStages
from .streamlocal import Opener
from .supervise import hold_lock as acquire_lock
from .transport import Link

log = logging.getLogger(__name__)
CLOCK_SKEW_MAX = 1.0  # seconds the guest may differ before we set its clock
HELLO_WAIT_S = 30.0  # the link-up clock check waits this long at most for the guest agent's hello
SLEEP_GAP = 5.0  # a wall-vs-monotonic jump this large means the host slept (monotonic stops in suspend)


class Agent:
    def __init__(
        self,
        name: str,
        connect: Callable[[], paramiko.Transport],
        *,
        machine_dir: Path,
        guest_socket: str = GUEST_SOCKET,
        streamlocal_mode: str = "auto",
        probe_interval: float = 2.0,
        reprovision: bool | None = None,
        shares: list[tuple[str, bool]] = (),
        set_clock: bool = True,
    ) -> None:
        self.name = name
        mp = paths.MachinePaths(name)
        self.docker_socket = machine_dir / mp.docker_socket.name
        self.control_path = machine_dir / mp.control_socket.name
        self.events = EventWriter(machine_dir / mp.events.name)
        self.opener = Opener(guest_socket, streamlocal_mode)
        self.link = Link(connect, self._on_up, self._on_down, probe_interval=probe_interval)
        self.engine = SocketForward(self.docker_socket, self.link, self.opener, on_error=self._engine_error)
        self.forwarder = Forwarder(self.link, on_event=lambda **kw: self.events.emit("forward", **kw))
        # docker.sock through QEMU's user network on a local machine, SSH otherwise (fastpath.py)
        emit_engine = lambda **kw: self.events.emit("socket", **kw)  # noqa: E731
        self.fastpath = fastpath.FastPath(self.link, self.opener, lambda: self._generation, emit_engine)
        # before it, where the VM has the port: the virtio-serial channel (serialpath.py)
        self.serial = serialpath.SerialPath(emit_engine)
        self.engine_choice = "auto"  # the control op `engine-path`: auto | fast (no serial) | ssh
        self.engine.fast = self._engine_channel
        self.table = ports.PortTable()
        self.machine_config = machine_dir / mp.config.name
        # a cluster node runs Debian's dockerd: its ports come from dockerd's API (dockerd.py)
        self.dockerd = (
            dockerd.Dockerd(self.opener) if dockerd.is_dockerd_machine(self.machine_config) else None
        )
        # host folder changes → inotify in the guest, for the bind sources the guest names (fswatch.py)
        self.fswatch = FsWatcher(
            self._post_fs_changes,
            self._share_roots,
            warn=lambda message, hint: self.events.emit("error", message=message, hint=hint or None),
            skipped=lambda: list(self.sync.shares),  # a sync share in a watched folder carries its changes
        )
        self.shares = sshfs.SshfsShares(_exec, lambda **kw: self.events.emit("share", **kw))
        for path, readonly in shares:
            self.shares.add(path, readonly)
        self.sync = syncshare.SyncShares(  # copies on the VM's disk kept in sync (`mount add --sync`)
            syncshare.machine_sync_paths(self.machine_config), machine_dir,
            lambda **kw: self.events.emit("share", **kw),
            syncshare.machine_sync_outers(self.machine_config),
        )  # fmt: skip
        self._table_lock = threading.Lock()
        self.control = ControlServer(self.control_path, self.handle)
        self.stopping = threading.Event()
        self.guest_info: dict[str, Any] | None = None
        self._subscribed_gen = -1
        self._provisioned_from: set[str] = set()
        self.reprovision = provision.enabled() if reprovision is None else reprovision
        self.clock: dict[str, Any] = {"last_check": None, "skew": None, "resyncs": 0}
        self.set_clock = set_clock  # False on an existing host (remote_host.py): its clock is its own
        self._generation = 0
        self.started_at = time.time()
        self.stages = StartupStages(self.events.emit)
        self.saver: idle.Saver | None = None  # the resource saver, for a machine whose driver can pause
        self.parking = parking.Parking(self)  # across a saving stop (parking.py)
        # a resumed machine with shared-memory RAM gives its free memory back to the host (memback.py)
        self.memback: memback.MemoryBack | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        lifeline.watch(self.machine_config.parent, self.stopping, self.stop)
        self.events.emit("state", state="starting", pid=os.getpid())
        self.stages.begin("engine socket")
        self.engine.start()
        self.events.emit("socket", state="listening", path=str(self.docker_socket))
        self.stages.done("engine socket")
        self.forwarder.adopt_held()  # published ports a killed agent left: served once the link is up
        self.control.start()
        if self.saver is not None:
            self.saver.start()  # resumes a machine a dead agent left paused, before the link tries it
        self.parking.on_start(self.machine_config.parent)
        self.stages.begin("ssh link")
        self.link.start()
        threading.Thread(target=self._sleep_watch, name="sleep-watch", daemon=True).start()

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.events.emit("state", state="stopping")
        if self.saver is not None:
            self.saver.stop()  # stop, delete and the next agent need a guest that runs
        if self.memback is not None:
            self.memback.cancel(timeout=5.0)  # a guest left running keeps all its memory, no balloon
        self.control.stop()
        self.engine.stop()
        self.serial.stop()
        self.fastpath.remove_rule()
        self.fswatch.stop()
        self.forwarder.close_all()
        self.shares.unmount_all(self.link.current())
        self.sync.stop()
        self.link.stop()
        self.events.emit("state", state="stopped")

    def wait(self) -> None:
        while not self.stopping.wait(1.0):
            pass

    # -- link callbacks --------------------------------------------------------------------------------------
    def _on_up(self, transport: paramiko.Transport) -> None:
        self._generation += 1
        self.events.emit("link", state="up", reconnects=self.link.reconnects)
        self.stages.done("ssh link")
        self.stages.begin("guest agent")
        resumed = self.parking.take_resumed()  # the first link to a resumed VM: the same guest as before
        threading.Thread(
            target=self._subscribe,
            args=(transport, self._generation, resumed),
            name="guest-events",
            daemon=True,
        ).start()
        clock = self.parking.step_clock if resumed and self.set_clock else self._sync_clock_after_hello
        threading.Thread(target=clock, args=(transport,), name="clock", daemon=True).start()
        if self.memback is not None:
            threading.Thread(
                target=self._memory_back,
                args=(transport, self._generation),
                name="memory",
                daemon=True,
            ).start()

    def _memory_back(self, transport: paramiko.Transport, generation: int) -> None:
        """A balloon an earlier agent left inflated goes; shared RAM a restore allocated goes back later."""
        assert self.memback is not None
        try:
            if self.memback.let_go():
                self.events.emit("memory", action="let-go", reason="a balloon left inflated")
        except memback.GiveBackError as exc:
            log.warning("memory: %s", exc)
        self.memback.after_link_up(
            lambda: parking.run(transport, "cat /proc/meminfo", 30.0)[1],
            lambda: (
                generation == self._generation
                and not self.link.parked
                and not (self.saver is not None and self.saver.paused)
            ),
        )

    @property
    def subscribed(self) -> bool:
        """The guest agent's event stream is open on the current link (acks flow, ports follow)."""
        return self._subscribed_gen == self._generation and self.link.current() is not None

    def _on_down(self, error: str) -> None:
        self.fastpath.disarm(error)
        self.events.emit("link", state="down", error=error, reconnects=self.link.reconnects)
        if not self.link.parked:  # parked: "saved" was said, and nothing is wrong
            self.events.emit("state", state="degraded")

    def _engine_error(self, message: str) -> None:
        self.events.emit("error", message=message)

    # -- guest events → listeners ----------------------------------------------------------------------------
    def _subscribe(self, transport: paramiko.Transport, generation: int, resumed: bool = False) -> None:
        # sshfs shares first: "ready" (the first hello below) must mean a container sees the host's files.
        self.shares.mount_all(transport)
        self.sync.sync_all(transport)  # likewise the sync shares' copies (changes while stopped carried over)
        waited_since = time.monotonic()
        while transport.is_active() and generation == self._generation and not self.stopping.is_set():
            try:
                if self.dockerd is not None:
                    self.guest_info = self.dockerd.info(transport)
                    self._consume(transport, self.dockerd.port_events(transport), generation)
                else:
                    if not resumed:  # a resumed guest's agent is the one /info checked before the save
                        self.guest_info = self._info(transport)
                        self.push_shares(transport, self.guest_info.get("shares"))
                    resumed = False  # a retry asks again (the guest agent may have restarted)
                    chan = self.opener.open(transport)
                    self._consume(transport, guestapi.stream_events(chan), generation)
            except Exception as exc:  # noqa: BLE001 - EOFError etc. from a dying transport: retry or end
                # The guest agent not listening yet (boot) or restarting: retry while the link lives.
                if time.monotonic() - waited_since > 30:
                    self.events.emit("error", message=f"guest agent unreachable: {exc}")
                    waited_since = time.monotonic()
            if self._subscribed_gen == generation:
                self._subscribed_gen = -1
            time.sleep(0.25)

    def _info(self, transport: paramiko.Transport) -> dict[str, Any]:
        status, body = guestapi.request(self.opener.open(transport), "GET", guestapi.API + "/info")
        if status != 200 or not isinstance(body, dict):
            raise guestapi.GuestApiError(f"GET {guestapi.API}/info answered {status}")
        ours = provision.local_checksum()
        theirs = body.get("agent_checksum")
        body["checksum_match"] = None if ours is None else theirs == ours
        if body["checksum_match"] is False:
            if theirs in self._provisioned_from or not self.reprovision:
                # Tried once already (or disabled): say so rather than loop replacing it.
                self.events.emit(
                    "error",
                    message="the guest agent differs from this host's copy (checksum mismatch)",
                    hint="recreate the machine: pymachine delete NAME; pymachine create NAME",
                )
                return body
            self._provisioned_from.add(str(theirs))
            self.events.emit("agent", action="reprovisioning", old=theirs, new=ours)
            provision.install(transport)
            self.events.emit("agent", action="reprovisioned", new=ours)
            raise guestapi.GuestApiError("the guest agent is restarting with this host's sources")
        return body

    def _consume(self, transport: paramiko.Transport, stream: Any, generation: int) -> None:
        resyncing = False
        for item in stream:
            if item is None:
                if resyncing:
                    with self._table_lock:
                        actions = self.table.end_resync()
                    self._carry_out(actions, transport, None)
                    self.forwarder.settle_adopted()
                    self.forwarder.reconcile()  # QEMU's hostfwd rules = the ports on its path (qemufwd.py)
                    resyncing = False
                continue
            kind = item.get("type")
            if kind == "hello":
                with self._table_lock:
                    self.table.on_hello()
                resyncing = True
                if self._subscribed_gen != generation:
                    self._subscribed_gen = generation
                    # A restored QEMU lost the forwards added at run time: put the known ones back before
                    # "ready" (start returns on it, the ports must answer then). Only put back: a host agent
                    # restarted after a kill -9 knows no ports until the replay, whose end drops the stale.
                    self.forwarder.reconcile(remove_stale=False)
                    self.fastpath.arm_soon(transport, generation)  # a new secret for each guest agent hello
                    self.serial.check()  # a new guest agent, maybe: it must join the port's session
                    self.events.emit("state", state="ready", docker_socket=str(self.docker_socket))
                    self.stages.done("guest agent")
            elif kind == "watch":
                try:
                    self.fswatch.request(protocol.parse_watch(item))
                except ValueError as exc:
                    self.events.emit("error", message=f"ignored a bad watch event from the guest: {exc}")
            elif kind == "port":
                try:
                    event = ports.parse_event(item)
                except ports.BadPortEvent as exc:
                    self.events.emit("error", message=f"ignored a bad port event from the guest: {exc}")
                    continue
                with self._table_lock:
                    actions = self.table.apply(event)
                self._carry_out(actions, transport, event if event.action == "add" else None)

    def _carry_out(
        self, actions: list[ports.Action], transport: paramiko.Transport, add: ports.PortEvent | None
    ) -> None:
        ok, error = True, ""
        for action in actions:
            if isinstance(action, ports.Open):
                try:
                    self.forwarder.open(action.rule)
                except BindError as exc:
                    ok, error = False, str(exc)
                    with self._table_lock:
                        self.table.forget(action.rule.key)
                    self.events.emit("forward", action="failed", error=error, **action.rule.to_json())
            elif isinstance(action, ports.Retarget):
                self.forwarder.retarget(action.rule)
            elif isinstance(action, ports.Close):
                self.forwarder.close(action.rule.key, "unpublished in the guest")
        if add is not None and add.id:
            self._ack(transport, add.id, ok, error)

    def _ack(self, transport: paramiko.Transport, event_id: str, ok: bool, error: str) -> None:
        body: dict[str, Any] = {"id": event_id, "ok": ok}
        if not ok:
            body["error"] = error
        try:
            status, answer = guestapi.request(
                self.opener.open(transport), "POST", guestapi.API + "/ports/ack", body
            )
        except (paramiko.SSHException, OSError, guestapi.GuestApiError) as exc:
            self.events.emit("error", message=f"could not acknowledge port event {event_id}: {exc}")
            return
        # 404 is normal for the resync replay: nobody waits on those adds any more.
        if status not in (200, 404):
            self.events.emit("error", message=f"the guest refused the ack of {event_id}: {status} {answer}")

    # -- host folder changes ---------------------------------------------------------------------------
    def _shares(self) -> list[dict[str, Any]]:
        """The machine's shares: config.json's, plus sshfs shares hot-plugged through the control socket
        (`share-mount`), which the guest agent must also accept as bind sources."""
        try:
            shares = json.loads(self.machine_config.read_text()).get("shares") or []
            shares = [s for s in shares if isinstance(s, dict) and isinstance(s.get("path"), str)]
        except (OSError, ValueError):
            shares = []
        known = {s["path"] for s in shares}
        plugged = [{"path": m.path, "readonly": m.readonly} for m in list(self.shares.mounts.values())]
        return shares + [s for s in plugged if s["path"] not in known]

    def _share_roots(self) -> list[str]:
        """The machine's shares (config.json): the only host folders the guest may have watched."""
        return [s["path"] for s in self._shares()]

    def push_shares(self, transport: paramiko.Transport | None = None, guest_has: Any = None) -> None:
        """Tell the guest agent the configured shares (on connect, and after a hot-plug): a share added
        since the boot is then refused as "not mounted, restart" rather than "not shared", and an sshfs share
        mounted now is usable at once. A guest agent started without a share list (an old seed) keeps none.
        `guest_has`: the list its `/info` showed; when that is this one nothing is sent (a cold boot's seed
        carried it: one round trip less while the booting guest is busiest)."""
        transport = transport or self.link.current()
        if transport is None:
            return
        # a sync share is a copy on the VM's disk: the guest does not ask to watch it
        body = {"shares": [protocol.share_entry(s["path"], bool(s.get("readonly")), bool(s.get("sync")))
                           for s in self._shares()]}  # fmt: skip
        if protocol.same_shares(guest_has, body["shares"]):
            return
        try:
            guestapi.request(self.opener.open(transport), "PUT", guestapi.API + "/shares", body)
        except (paramiko.SSHException, OSError, guestapi.GuestApiError) as exc:
            log.info("share list not sent to the guest: %s", exc)

    def _post_fs_changes(self, changes: list[dict[str, Any]]) -> None:
        transport = self.link.current()
        if transport is None:
            return  # the link is down: the guest resends its watch set on reconnect; these changes are gone
        status, answer = guestapi.request(
            self.opener.open(transport), "POST", guestapi.API + "/fs-events", {"changes": changes}
        )
        if status != 200:
            self.events.emit(
                "error", message=f"the guest refused {len(changes)} file changes: {status} {answer}"
            )

    # -- clock -------------------------------------------------------------------------------------------
    def sync_clock(self, transport: paramiko.Transport | None = None, force: bool = False) -> dict[str, Any]:
        """Set the guest clock from the host's when they differ (after host sleep it lags by the gap)."""
        transport = transport or self.link.get(timeout=10)
        try:
            guest = float(_exec(transport, "date +%s.%N").strip() or 0)
            skew = time.time() - guest
            self.clock.update(last_check=time.time(), skew=round(skew, 3))
            if self.set_clock and (force or abs(skew) > CLOCK_SKEW_MAX):
                status, err = parking.step_guest_clock(transport)  # the time sent as the guest asks
                if status != 0:
                    raise OSError(f"date -s failed in the guest: {err.strip() or status}")
                self.clock["resyncs"] += 1
                self.events.emit("clock", skew=round(skew, 3), ok=True)
        except (paramiko.SSHException, OSError, EOFError, ValueError) as exc:  # EOFError: the session ended
            self.events.emit("clock", ok=False, error=str(exc) or type(exc).__name__)
        return dict(self.clock)

    def _sync_clock_after_hello(self, transport: paramiko.Transport) -> None:
        """The link-up clock check, after the guest agent's hello (or HELLO_WAIT_S): its exec (a shell and
        `date`) ran beside a booting guest agent's imports on the vCPUs they needed. A booted guest's clock
        comes from the emulated RTC, right to the second: nothing needs the check sooner."""
        generation, deadline = self._generation, time.monotonic() + HELLO_WAIT_S
        while not self.subscribed and time.monotonic() < deadline:
            if generation != self._generation or not transport.is_active() or self.stopping.wait(0.1):
                return  # a newer link checks the clock itself
        self.sync_clock(transport)

    def _sleep_watch(self) -> None:
        offset = time.time() - time.monotonic()
        while not self.stopping.wait(1.0):
            now = time.time() - time.monotonic()
            gap, offset = now - offset, now
            if abs(gap) > SLEEP_GAP:
                self.events.emit("clock", gap=round(gap, 1), ok=True, reason="host slept")
                t = self.link.current()
                if t is not None and not (self.saver is not None and self.saver.paused):  # a wake steps it
                    self.sync_clock(t)

    # -- control socket ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        link_up = self.link.current() is not None
        engine_health = (
            "ok"
            if link_up and self.subscribed
            else ("waiting-for-link" if not link_up else "waiting-for-guest-agent")
        )
        state = (
            "ready"
            if link_up and self.subscribed
            else ("connecting" if self.link.reconnects == 0 and not self.link.connected_at else "degraded")
        )
        state = "saved" if self.link.parked else state
        return {
            "ok": True,
            "name": self.name,
            "pid": os.getpid(),
            "state": state,
            "started_at": self.started_at,
            "link": {
                "state": "up" if link_up else "down",
                "last_error": self.link.last_error or None,
                "reconnects": self.link.reconnects,
                "connected_at": self.link.connected_at or None,
                "down_since": self.link.down_since,
            },
            "engine_socket": {
                "path": str(self.docker_socket),
                "health": engine_health,
                "connections": self.engine.connections,
                "failures": self.engine.failures,
                "last_error": self.engine.last_error or None,
                "via": self.engine_via,  # "serial" (virtio-serial), "fast" (QEMU's user network) or "ssh"
                "choice": self.engine_choice,
                "serial": self.serial.snapshot(),
                "fast": self.fastpath.snapshot(),
            },
            "guest_agent": self.guest_info,
            "forwards": self.forwarder.snapshot(),
            "clock": dict(self.clock),
            "watch": self.fswatch.snapshot(),
            "shares": self.shares.snapshot(),
            "sync": self.sync.snapshot(),
            "saver": self.saver.snapshot() if self.saver is not None else None,
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return self.status()
        if op == "forwards":
            return {"ok": True, "forwards": self.forwarder.snapshot()}
        if op == "health":
            st = self.status()
            bad = [f for f in st["forwards"] if f["health"] != "ok"]
            return {
                "ok": True,
                "healthy": st["state"] == "ready" and not bad,
                "state": st["state"],
                "link": st["link"]["state"],
                "unhealthy_forwards": bad,
            }
        if op == "engine-path":  # via "ssh" | "fast" forces that path for new connections, "auto" undoes it
            return self._engine_path(request)
        if op == "drop-link":
            self.link.drop("dropped through the control socket")
            return {"ok": True}
        if op in ("share-mount", "share-unmount"):
            return self._share_op(op, request)
        if op in parking.CONTROL_OPS:  # park, unpark: around a saving stop
            return self.parking.control(request)
        if op in idle.CONTROL_OPS:  # wake, pause, saver
            return idle.control(self.saver, request)
        if op == "push-shares":  # config.json's shares changed (mount add|rm): the guest agent's list follows
            self.push_shares()
            return {"ok": True}
        if op == "resync-clock":
            return {"ok": True, "clock": self.sync_clock(force=True)}
        if op == "shutdown":
            threading.Thread(target=self.stop, daemon=True).start()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    # -- the engine socket's paths: serial, then fast, then SSH ----------------------------------------------
    def _engine_channel(self) -> Any:
        """A channel for one docker.sock connection by the first path that gives one; None: SSH."""
        if self.engine_choice == "auto":
            chan = self.serial.open()
            if chan is not None:
                return chan
        return self.fastpath.open()  # None with the choice "ssh" (forced_ssh) or when it is not armed

    @property
    def engine_via(self) -> str:
        if self.engine_choice == "auto" and self.serial.up:
            return "serial"
        return self.fastpath.path

    def _engine_path(self, request: dict[str, Any]) -> dict[str, Any]:
        """`engine-path` with `"via"`: "ssh" (every new engine connection over SSH), "fast" (not serial: the
        bench compares them on one socket), "auto" or "serial" (the best there is)."""
        wanted = request.get("via")
        if wanted not in (None, "ssh", "fast", "serial", "auto"):
            return {"ok": False, "error": 'via is "ssh", "fast", "serial" or "auto"'}
        if wanted is not None:
            self.engine_choice = "auto" if wanted == "serial" else wanted
            self.fastpath.forced_ssh = wanted == "ssh"
        return {
            "ok": True,
            "via": self.engine_via,
            "engine_path": self.fastpath.snapshot(),
            "serial": self.serial.snapshot(),
        }

    def _share_op(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        """Hot-plug of an sshfs share (cheap: one channel): `pymachine mount add` on a running machine."""
        path = request.get("share")
        if not isinstance(path, str) or not path.startswith("/"):
            return {"ok": False, "error": "share must be an absolute host path"}
        if op == "share-unmount":
            self.shares.unmount(self.link.current(), path, forget=True)
            return {"ok": True}
        mount = self.shares.add(path, bool(request.get("readonly")))
        transport = self.link.current()
        if transport is not None:
            self.shares.mount(transport, mount)  # else the next link-up mounts it
            self.push_shares(transport)  # the guest agent's share list, so the new share is usable at once
        return {"ok": mount.state == "mounted", "share": mount.snapshot(), "error": mount.error}


def _exec(transport: paramiko.Transport, command: str, timeout: float = 10.0) -> str:
    chan = transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(command)
        out = b""
        while data := chan.recv(65536):
            out += data
        status = chan.recv_exit_status()
        if status != 0:
            raise OSError(f"'{command}' failed in the guest (exit status {status})")
        return out.decode()
    finally:
        chan.close()


def machine_connect(name: str) -> Callable[[], paramiko.Transport]:
    """Connect to machine `name` with its client key; the pin and the port are re-read on every attempt."""
    from .. import remote_libvirt, ssh
    from .transport import open_transport

    key_path = paths.machine(name).ssh_key

    def connect() -> paramiko.Transport:
        pkey = paramiko.PKey.from_path(key_path)
        host, port, user = ssh.endpoint(name)
        uri = remote_libvirt.machine_uri(name)  # a VM on another host: through that host's link
        sock = remote_libvirt.channel(name, uri, port) if uri else None
        return open_transport(host, port, user, pkey, ssh.pinned_host_key(name), sock=sock)

    return connect


def sshfs_shares(name: str) -> list[tuple[str, bool]]:
    """The machine's shares when it was started with the sshfs transport (else the driver serves them)."""
    from .. import machines

    try:
        cfg = machines.load_config(name)
    except Exception:  # noqa: BLE001 - an agent run against a test sshd has no machine config
        return []
    try:
        from ..shares import stored_transport

        transport = stored_transport(name) or cfg.share_transport
    except ImportError:
        transport = cfg.share_transport
    # (a sync share is a copy the host agent makes, not an sshfs mount)
    return [(s.path, s.readonly) for s in cfg.shares if not s.sync] if transport == "sshfs" else []


def main(name: str, *, connect: Callable[[], paramiko.Transport] | None = None) -> int:
    mp = paths.machine(name)
    mp.dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(threadName)s %(levelname)s %(message)s",
        handlers=[rotating_log(mp.agent_log, mp.agent_log_lock)],
    )
    # paramiko logs every refused channel open as ERROR (the guest agent restarting, a closed guest port);
    # those are expected here and already show as events with their meaning.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    paths.check_socket_path(mp.docker_socket)
    lock = acquire_lock(mp.agent_pid)
    if lock is None:
        log.info("a host agent for %s is already running", name)
        return 0
    from .. import remote_host

    # A machine on another host: its agent's socket, its own clock, its agent updated by `start` (remote_host)
    remote = remote_host.agent_options(name)
    agent = Agent(
        name,
        connect or machine_connect(name),
        machine_dir=mp.dir,
        # Overrides for the tests that run the agent against a local sshd and for bench/forward.py.
        guest_socket=os.environ.get("PYMACHINE_GUEST_SOCKET", remote.get("guest_socket", GUEST_SOCKET)),
        streamlocal_mode=os.environ.get("PYMACHINE_STREAMLOCAL", "auto"),
        shares=sshfs_shares(name),
        reprovision=remote.get("reprovision"),
        set_clock=remote.get("set_clock", True),
    )
    agent.forwarder.qemu = qemufwd.machine_forwards(name)  # published ports through QEMU on a local machine
    agent.fastpath.enable(agent.forwarder.qemu)  # and the engine socket
    agent.serial.enable(serialpath.machine_port(name))  # before both, where the VM has the port
    agent.saver = idle.machine_saver(name, agent)
    monitor = qemufwd.machine_monitor(name)
    if monitor is not None:
        agent.memback = memback.MemoryBack(
            monitor, memback.machine_shmem(name), lambda **kw: agent.events.emit("memory", **kw)
        )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=agent.stop, daemon=True).start())
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=agent.stop, daemon=True).start())
    agent.start()
    log.info("host agent for %s running (pid %d)", name, os.getpid())
    agent.wait()
    time.sleep(0.2)  # let stop() finish its events
    try:
        mp.agent_pid.unlink()
    except FileNotFoundError:
        pass
    return 0
