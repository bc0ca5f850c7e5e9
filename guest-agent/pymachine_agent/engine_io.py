"""The engine's I/O half: attach, exec, logs, stats, top, cp, diff, update, commit, network views.

A mixin of `Engine` (engine.py) so each file keeps one concern: engine.py is records and lifecycle, this
is streams and files.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import archive, cpmounts, detachkeys
from . import dockerview as view
from .runtime import ExecSpec, Limits, RestartPolicy, detached
from .runtime.errors import Conflict, NotFound
from .stdio import ExecSession, wrap_attach

_WHITEOUT_DEV = 0


@dataclass
class ExecRecord:
    id: str
    container: str
    config: dict[str, Any]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    process: Any = None
    started: bool = False
    detached: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class EngineIO:
    runtime: Any
    images: Any
    network: Any
    execs: dict[str, ExecRecord]
    events: Any

    # -- attach / logs -----------------------------------------------------------------------------

    def container_attach(
        self,
        ref: str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        logs: bool = False,
        stream: bool = True,
        detach_keys: str = "",
    ) -> Any:
        st = self._state(ref)  # type: ignore[attr-defined]
        tty = bool(st.spec and st.spec.tty)
        try:
            keys = detachkeys.parse(detach_keys)
        except detachkeys.InvalidDetachKeys as exc:
            raise view_bad(str(exc)) from None
        replay: list[tuple[int, bytes]] = []
        if logs:
            for e in self.runtime.logs(st.id, stdout=stdout, stderr=stderr):
                replay.append((1 if e.stream == "stdout" else 2, e.data))
        if not stream:
            return wrap_attach(None, tty, replay)
        raw = self.runtime.attach(st.id, stdin=stdin, stdout=stdout, stderr=stderr)
        self.events.publish("container", "attach", st.id, self._attrs(st.id))
        return wrap_attach(raw, tty, replay, keys)

    def _attrs(self, cid: str) -> dict[str, str]:
        meta = self.meta.get(cid, {})  # type: ignore[attr-defined]
        return {**meta.get("labels", {}), "image": meta.get("image", ""), "name": meta.get("name", "")}

    def container_resize(self, ref: str, height: int, width: int) -> None:
        st = self._state(ref)  # type: ignore[attr-defined]
        if not st.running:
            raise Conflict(f"cannot resize container {st.id}: container is not running")
        self.runtime.resize(st.id, height, width)

    def container_logs(
        self,
        ref: str,
        *,
        follow: bool,
        stdout: bool,
        stderr: bool,
        since: float | None,
        until: float | None,
        timestamps: bool,
        tail: int | None,
    ) -> tuple[Iterator[tuple[int, bytes]], bool]:
        st = self._state(ref)  # type: ignore[attr-defined]
        entries = self.runtime.logs(
            st.id,
            stdout=stdout,
            stderr=stderr,
            since=since or 0,
            until=until or 0,
            tail=tail,
            follow=follow and st.running,
        )

        def gen() -> Iterator[tuple[int, bytes]]:
            for e in entries:
                data = e.data
                if timestamps:
                    data = e.time.encode() + b" " + data
                yield (1 if e.stream == "stdout" else 2, data)

        return gen(), bool(st.spec and st.spec.tty)

    # -- top / stats / update / diff ---------------------------------------------------------------

    def container_top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        st = self._state(ref)  # type: ignore[attr-defined]
        if not st.running:
            raise Conflict(f"container {st.id} is not running")
        return self.runtime.top(st.id, ps_args)

    def _net_stats(self, cid: str) -> dict[str, Any]:
        ep = self.network.endpoint(cid) if self.network is not None else None
        out: dict[str, Any] = {}
        for a in ep.attachments if ep else []:
            base = Path("/sys/class/net") / a.host_ifname / "statistics"
            try:
                # the host end of the veth: its rx is the container's tx
                read = _reader(base)
                out[a.ifname] = {
                    "rx_bytes": read("tx_bytes"),
                    "rx_packets": read("tx_packets"),
                    "rx_errors": 0,
                    "rx_dropped": 0,
                    "tx_bytes": read("rx_bytes"),
                    "tx_packets": read("rx_packets"),
                    "tx_errors": 0,
                    "tx_dropped": 0,
                }
            except (OSError, ValueError):
                continue
        return out

    def _stats_sample(self, st: Any) -> dict[str, Any]:
        sample: dict[str, Any]
        try:
            sample = dict(self.runtime.stats(st.id)) if st.running else {}
        except (Conflict, NotFound, OSError):
            sample = {}
        sample.setdefault(
            "cpu_stats",
            {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": os.cpu_count() or 1},
        )
        sample.setdefault("memory_stats", {})
        sample.setdefault("pids_stats", {})
        sample.setdefault("blkio_stats", {"io_service_bytes_recursive": None})
        sample["read"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        sample["name"] = "/" + st.name
        sample["id"] = st.id
        nets = self._net_stats(st.id) if st.running else {}
        if nets:
            sample["networks"] = nets
        return sample

    def container_stats(self, ref: str, stream: bool = True, one_shot: bool = False) -> Iterator[dict]:
        st = self._state(ref)  # type: ignore[attr-defined]

        def gen() -> Iterator[dict]:
            prev: dict[str, Any] | None = None
            if not stream and not one_shot and st.running:
                prev = self._stats_sample(st)
                time.sleep(1.0)  # Docker's two samples, so `docker stats --no-stream` can compute CPU %
            while True:
                cur = self._stats_sample(self._state(st.id))  # type: ignore[attr-defined]
                cur["precpu_stats"] = (prev or {}).get("cpu_stats") or {"cpu_usage": {"total_usage": 0}}
                cur["preread"] = (prev or {}).get("read", "0001-01-01T00:00:00Z")
                yield cur
                if not stream:
                    return
                prev = cur
                time.sleep(1.0)

        return gen()

    def container_update(self, ref: str, body: dict[str, Any]) -> list[str]:
        st = self._state(ref)  # type: ignore[attr-defined]
        keys = {
            "Memory": "memory",
            "MemorySwap": "memory_swap",
            "MemoryReservation": "memory_reservation",
            "NanoCpus": "nano_cpus",
            "CpuQuota": "cpu_quota",
            "CpuPeriod": "cpu_period",
            "CpuShares": "cpu_shares",
            "CpusetCpus": "cpuset_cpus",
            "PidsLimit": "pids_limit",
            "BlkioWeight": "io_weight",
        }
        cur = st.spec.limits if st.spec else Limits()
        changes = {attr: body[k] for k, attr in keys.items() if body.get(k) not in (None, 0, "")}
        limits = Limits(**{**cur.__dict__, **changes}) if changes else None
        rp = body.get("RestartPolicy") or {}
        policy = RestartPolicy(rp["Name"], int(rp.get("MaximumRetryCount") or 0)) if rp.get("Name") else None
        self.runtime.update(st.id, limits=limits, restart_policy=policy)
        return []

    def container_changes(self, ref: str) -> list[dict[str, Any]]:
        st = self._state(ref)  # type: ignore[attr-defined]
        upper = Path(st.upper_dir)
        layers = [Path(p) for p in (st.spec.layers if st.spec else [])]
        out = []
        for dirpath, dirnames, filenames in os.walk(upper):
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                rel = "/" + str(full.relative_to(upper))
                try:
                    s = full.lstat()
                except OSError:
                    continue
                if (
                    not full.is_dir()
                    and os.major(s.st_rdev) == 0
                    and os.minor(s.st_rdev) == 0
                    and (s.st_mode & 0o170000 == 0o020000)
                ):
                    kind = 2  # a whiteout: deleted
                else:
                    kind = 0 if any((lay / rel.lstrip("/")).exists() for lay in layers) else 1
                out.append({"Path": rel, "Kind": kind})
        # what the runtime creates only to mount over (Docker keeps these in its hidden "-init" layer)
        hidden = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev", "/proc", "/sys", "/dev/console"}
        out = [
            c
            for c in out
            if c["Path"] not in hidden and not c["Path"].startswith(("/dev/", "/proc/", "/sys/"))
        ]
        paths = [c["Path"] for c in out]
        return [
            c
            for c in out
            if not (c["Kind"] == 0 and (upper / c["Path"].lstrip("/")).is_dir())
            or any(p.startswith(c["Path"] + "/") for p in paths)
        ]

    # -- docker cp / export: archive.py, on an fd of the container's root ----------------------------------

    def _root_of(
        self, st: Any, writable: bool, mounts: bool = True
    ) -> contextlib.AbstractContextManager[int]:
        """An fd of the container's root: a running one's own (its volumes included, as Docker's cp sees
        them), else a detached overlay of its layers that no path of the guest shows (runtime/detached.py)."""
        if mounts and st.running and st.pid:
            return _closing(os.open(f"/proc/{st.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        return detached.overlay(st.spec.layers if st.spec else [], st.upper_dir, writable)

    def _cp_root(
        self, st: Any, path: str, writable: bool
    ) -> tuple[contextlib.AbstractContextManager[int], str]:
        """`docker cp`'s root and path. A stopped container's volumes and binds are not in its detached
        overlay, so a path below one (`/vol1/data.txt`) is served from the mount's source, as dockerd
        mounts them for the copy; a running container's own root has them."""
        found = None if st.running and st.pid else cpmounts.covering(st.spec.mounts if st.spec else [], path)
        if found is None:
            return self._root_of(st, writable), path
        mount, rest = found
        if writable and mount.readonly:
            raise view_bad(f"mounted volume is marked read-only: {mount.target}")
        return _closing(cpmounts.open_source(mount)), rest

    def _cp_name(self, path: str, routed: str, name: str) -> str:
        """The tar's top name: a mount's own folder (`cp ctr:/vol1 .`) is named as in the container."""
        if routed.rstrip("/") == "" and not path.endswith(("/", "/.")):
            return posixpath.basename(path.rstrip("/")) or name
        return name

    def archive_get(self, ref: str, path: str, head: bool = False) -> tuple[str, Iterator[bytes]]:
        st = self._state(ref)  # type: ignore[attr-defined]
        with contextlib.ExitStack() as stack:
            root_cm, routed = self._cp_root(st, path, writable=False)
            root = stack.enter_context(root_cm)
            info = archive.path_stat(root, routed)
            info["name"] = self._cp_name(path, routed, info["name"])
            if head:
                return archive.stat_header(info), (piece for piece in ())
            top, name = archive.open_source(root, routed)
            name = self._cp_name(path, routed, name)
            stack.callback(os.close, top)
            # the root stays open while the tar streams; the stream's end (or close) releases it
            return archive.stat_header(info), _Streaming(stack.pop_all(), archive.tar_stream(top, name))
        raise AssertionError("unreachable")

    def container_export(self, ref: str) -> Iterator[bytes]:
        """`docker export`: the container's filesystem without its mounts (image layers + upper dir)."""
        st = self._state(ref)  # type: ignore[attr-defined]
        with contextlib.ExitStack() as stack:
            root = stack.enter_context(self._root_of(st, writable=False, mounts=False))
            return _Streaming(stack.pop_all(), archive.tar_stream(root, "", include_top=False))
        raise AssertionError("unreachable")

    def archive_put(self, ref: str, path: str, chunks: Any, no_overwrite: bool = False) -> None:
        st = self._state(ref)  # type: ignore[attr-defined]
        root_cm, path = self._cp_root(st, path, writable=True)
        with root_cm as root:
            try:
                archive.put_tar(root, path, chunks, no_overwrite=no_overwrite)
            except OSError as err:
                raise archive.ArchiveFailed(f"copying into {path}: {err}") from err

    # -- exec --------------------------------------------------------------------------------------

    def exec_create(self, ref: str, body: dict[str, Any]) -> str:
        st = self._state(ref)  # type: ignore[attr-defined]
        if st.status != "running":
            if st.status == "paused":
                raise Conflict(f"container {st.id} is paused, unpause the container before exec")
            raise Conflict(f"container {st.id} is not running")
        if not body.get("Cmd"):
            raise view_bad("No exec command specified")
        eid = secrets.token_hex(32)
        self.execs[eid] = ExecRecord(eid, st.id, body)
        self.events.publish("container", f"exec_create: {' '.join(body['Cmd'])}", st.id, self._attrs(st.id))
        return eid

    def _exec(self, eid: str) -> ExecRecord:
        rec = self.execs.get(eid)
        if rec is None:
            raise NotFound(f"No such exec instance: {eid}")
        return rec

    def _exec_spawn(self, rec: ExecRecord, detach: bool) -> Any:
        if rec.started:
            raise Conflict(f"Exec {rec.id} has already been started")
        st = self._state(rec.container)  # type: ignore[attr-defined]
        if st.status != "running":
            raise Conflict(f"container {st.id} is not running")
        cfg = rec.config
        spec = ExecSpec(
            argv=list(cfg["Cmd"]),
            env=list(cfg.get("Env") or []),
            user=cfg.get("User") or "",
            workdir=cfg.get("WorkingDir") or "",
            tty=bool(cfg.get("Tty")),
            console_size=[int(n) for n in (cfg.get("ConsoleSize") or [])[:2]],
            stdin=bool(cfg.get("AttachStdin")) and not detach,
            privileged=bool(cfg.get("Privileged")),
            detach=detach,
        )
        rec.started, rec.detached = True, detach
        proc = self.runtime.exec(st.id, spec)
        rec.process, rec.pid, rec.running = proc, getattr(proc, "pid", 0), True
        self.events.publish("container", f"exec_start: {' '.join(cfg['Cmd'])}", st.id, self._attrs(st.id))
        return proc

    def _exec_finished(self, rec: ExecRecord, code: int) -> None:
        rec.exit_code, rec.running = code, False
        rec.done.set()
        self.events.publish(
            "container",
            "exec_die",
            rec.container,
            {**self._attrs(rec.container), "execID": rec.id, "exitCode": str(code)},
        )

    def exec_start_detached(self, eid: str) -> None:
        rec = self._exec(eid)
        proc = self._exec_spawn(rec, detach=True)

        def reap() -> None:
            self._exec_finished(rec, int(proc.wait()))

        threading.Thread(target=reap, daemon=True).start()

    def exec_wants_stdin(self, eid: str) -> bool:
        return bool(self._exec(eid).config.get("AttachStdin"))

    def exec_attach(self, eid: str, tty: bool | None = None, console_size: list[int] | None = None) -> Any:
        rec = self._exec(eid)
        if console_size:  # exec start's ConsoleSize wins over exec create's, as in dockerd
            rec.config["ConsoleSize"] = console_size
        proc = self._exec_spawn(rec, detach=False)
        return ExecSession(
            proc, bool(rec.config.get("Tty")), on_exit=lambda code: self._exec_finished(rec, code)
        )

    def exec_resize(self, eid: str, height: int, width: int) -> None:
        rec = self._exec(eid)
        if rec.process is not None and hasattr(rec.process, "resize"):
            try:
                rec.process.resize(height, width)
            except OSError:
                pass

    def exec_inspect(self, eid: str) -> dict[str, Any]:
        rec = self._exec(eid)
        cfg = rec.config
        if rec.started and not rec.detached and not rec.done.is_set():
            # the CLI inspects right after the stream ends: let the reaper record it. A detached exec is
            # inspected while it runs (Running, ExitCode null), as dockerd answers.
            rec.done.wait(2.0)
        cmd = list(cfg.get("Cmd") or [])
        return {
            "ID": rec.id,
            "Running": rec.running,
            "ExitCode": rec.exit_code,
            "ProcessConfig": {
                "tty": bool(cfg.get("Tty")),
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": bool(cfg.get("Privileged")),
                "user": cfg.get("User") or "",
            },
            "OpenStdin": bool(cfg.get("AttachStdin")),
            "OpenStderr": bool(cfg.get("AttachStderr")),
            "OpenStdout": bool(cfg.get("AttachStdout")),
            "CanRemove": False,
            "ContainerID": rec.container,
            "DetachKeys": cfg.get("DetachKeys") or "",
            "Pid": rec.pid,
        }

    # -- commit, ids, networks ---------------------------------------------------------------------

    def container_id(self, ref: str) -> str:
        return self._state(ref).id  # type: ignore[attr-defined]

    def container_commit(
        self,
        ref: str,
        repo: str = "",
        tag: str = "",
        comment: str = "",
        author: str = "",
        changes: list[str] | None = None,
        config: dict | None = None,
        pause: bool = True,
    ) -> str:
        """`docker commit`. A running container is frozen through its cgroup for the whole commit (Docker's
        `pause=true` default), so the layer is one moment of its files; `pause=false` commits it live, and the
        upper dir is then read with no-follow fd walks (engine_commit.py) whatever the container does."""
        st = self._state(ref)  # type: ignore[attr-defined]
        with contextlib.ExitStack() as frozen:
            if pause and st.status == "running":
                self.runtime.pause(st.id)
                frozen.callback(self.runtime.unpause, st.id)
            return self._commit(st, repo, tag, comment, author, changes, config)
        raise AssertionError("unreachable")

    def _commit(
        self,
        st: Any,
        repo: str,
        tag: str,
        comment: str,
        author: str,
        changes: list[str] | None,
        config: dict | None,
    ) -> str:
        d = view.docker_of(st)
        base_config = dict(d.get("Config") or {})
        if config:
            base_config.update({k: v for k, v in config.items() if v not in (None, "", [], {})})
        target = f"{repo}:{tag or 'latest'}" if repo else None
        parent_layers = self.images.layer_dirs(d["Image"]) if d.get("Image") else []
        from .engine_commit import committable_upper  # with build/: ~0.5 s of agent start-up under TCG

        with committable_upper(Path(st.upper_dir), parent_layers) as upper:
            image_id = self.images.commit(
                upper,
                d.get("Image"),
                {"config": base_config, "changes": changes or []},
                comment=comment,
                author=author,
                tag=target,
            )
        self.events.publish("container", "commit", st.id, {**self._attrs(st.id), "comment": comment})
        return image_id

    def _configured_networks(self, cid: str) -> dict[str, Any]:
        """Networks a container joins at start from its create request: {network id: endpoint dict}."""
        ep = (self.meta.get(cid) or {}).get("endpoint") or {}  # type: ignore[attr-defined]
        out: dict[str, Any] = {}
        refs = [ep.get("network_mode") or "bridge", *(ep.get("networks") or {})]
        for ref in refs:
            try:
                out[self.network.inspect_network(ref)["Id"]] = ref
            except Exception:
                continue
        return out

    def network_connect(self, ref: str, container: str, settings: Any) -> str:
        st = self._state(container)  # type: ignore[attr-defined]
        net_id = self.network.inspect_network(ref)["Id"]
        configured = self._configured_networks(st.id)
        if not st.running and net_id in configured:
            # compose re-connects a created container to its own network to set aliases: merge them
            ep = self.meta[st.id]["endpoint"]  # type: ignore[attr-defined]
            entry = ep.setdefault("networks", {}).setdefault(
                configured[net_id], {"aliases": [], "ipv4_address": ""}
            )
            entry["aliases"] = list(dict.fromkeys([*(entry.get("aliases") or []), *settings.aliases]))
            return st.id
        self.network.connect(ref, st.id, settings)
        return st.id

    def network_disconnect(self, ref: str, container: str, force: bool = False) -> str:
        st = self._state(container)  # type: ignore[attr-defined]
        net_id = self.network.inspect_network(ref)["Id"]
        if not st.running and net_id in self._configured_networks(st.id):
            self.network.disconnect(ref, st.id, force=True)  # drop a remembered connect, if any
            return st.id
        self.network.disconnect(ref, st.id, force=force)
        return st.id

    def network_list(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        if self.network is None:
            return []
        return self.network.list_networks(filters)

    def network_inspect(self, ref: str) -> dict[str, Any]:
        if self.network is None:
            raise NotFound(f"network {ref} not found")
        return self.network.inspect_network(ref)


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


class _Streaming:
    """`chunks`, then `stack` closed: when the stream ends or fails, or the API closes it because the
    client left (also before the first piece, when a generator's own `finally` would never run)."""

    def __init__(self, stack: contextlib.ExitStack, chunks: Iterator[bytes]) -> None:
        self.stack, self.chunks = stack, chunks

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self.chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            getattr(self.chunks, "close", lambda: None)()
        finally:
            self.stack.close()


def _reader(base: Path) -> Any:
    return lambda name: int((base / name).read_text())


def view_bad(message: str) -> Exception:
    from .dockerspec import BadParameter

    return BadParameter(message)
