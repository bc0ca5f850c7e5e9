"""The container service: create, list, inspect, start/stop/kill/pause, wait, remove, rename, prune, update.

Container records live in the runtime's state (the Docker-shaped Config/HostConfig ride along in
`spec.extra["docker"]`; engine/records.py), so an agent restart loses nothing. What a container's streams,
files and execs need is in engine/streams.py, files.py and execs.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from .. import dockerview as view
from ..dockerspec import BadParameter, translate_create, valid_name
from ..errors import Conflict as EngineConflict
from ..errors import NotModified
from ..events import EventBus, PortAckError, PortBroker
from ..health import HealthMonitor
from ..images import ImageNotFound, ImageStore
from ..network import NetworkManager
from ..runtime import ContainerState, Limits, Mount, RestartPolicy, Runtime
from ..runtime.errors import NotFound
from ..shares import Shares
from ..volumes import VolumeStore
from .execs import ExecService
from .linking import Links
from .names import new_name, with_tag
from .records import ContainerRecords
from .sizes import container_sizes

log = logging.getLogger("pymachine_agent.engine")


class ContainerService:
    def __init__(
        self,
        *,
        runtime: Runtime,
        records: ContainerRecords,
        images: ImageStore,
        volumes: VolumeStore,
        network: NetworkManager | None,
        shares: Shares,
        events: EventBus,
        ports: PortBroker,
        health: HealthMonitor,
        execs: ExecService,
        links: Links,
    ) -> None:
        self.runtime = runtime
        self.records = records
        self.images = images
        self.volumes = volumes
        self.network = network
        self.shares = shares
        self.events = events
        self.ports = ports
        self.health = health
        self.execs = execs
        self.links = links
        self._removing: set[str] = set()  # auto-removes in progress

    def auto_remove(self, cid: str) -> None:
        """--rm: remove after the exit. A client waits for the `destroy` (wait?condition=removed), so a
        transient failure is retried rather than leaving `docker run --rm` hanging."""
        with self.records.lock:
            if cid in self._removing:
                return
            self._removing.add(cid)
        try:
            for attempt in range(20):
                try:
                    self.remove(cid, force=True, volumes=True)
                    return
                except NotFound:
                    return  # a racing DELETE already did it
                except Exception as exc:
                    log.warning("auto-remove of %s (try %d): %s", cid[:12], attempt + 1, exc)
                    time.sleep(0.5)
        finally:
            with self.records.lock:
                self._removing.discard(cid)

    # -- containers: create ----------------------------------------------------------------------------

    def create(self, body: dict[str, Any], name: str = "") -> tuple[str, list[str]]:
        name = name.lstrip("/")
        if name and not valid_name(name):
            raise BadParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise BadParameter("config cannot be empty in order to create a container")
        try:
            image_id = self.images.resolve(image_ref)
        except ImageNotFound:
            raise ImageNotFound(f"No such image: {with_tag(image_ref)}") from None
        image = {"Id": image_id, "config": self.images.config(image_id).get("config") or {}}
        layers = [str(p) for p in self.images.layer_dirs(image_id)]
        with self.records.lock:
            if name and any(s.name == name for s in self.runtime.list()):
                existing = next(s.id for s in self.runtime.list() if s.name == name)
                raise EngineConflict(
                    f'Conflict. The container name "/{name}" is already in use by container "{existing}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                )
            cid = secrets.token_hex(32)
            name = name or new_name(s.name for s in self.runtime.list())
            plan = translate_create(
                cid, name, body, image, layers, self.volumes.path, host_name=os.uname().nodename
            )
            binds = (body.get("HostConfig") or {}).get("Binds") or []
            plan.spec.mounts = self.shares.check(plan.spec.mounts, binds)
            for vol in plan.named_volumes:
                self.volumes.ensure(vol)
            for target in plan.anonymous_targets:
                vol = self.volumes.create(anonymous=True)["Name"]
                plan.spec.mounts.append(Mount("volume", target, self.volumes.path(vol)))
            mode = plan.endpoint.network_mode
            if mode.startswith("container:"):
                other = self.records.state(mode.split(":", 1)[1])
                if not other.pid:
                    raise EngineConflict(f"cannot join network of a non running container: {other.id}")
                plan.spec.network = f"/proc/{other.pid}/ns/net"
            elif self.network is not None and mode not in ("host", "none"):
                self.network.inspect_network(mode)  # 404 "network x not found" before anything is recorded
            for link in plan.spec.extra.get("links") or []:
                if not any(s.name == link["name"] or s.id == link["name"] for s in self.runtime.list()):
                    # 400, not 404: the CLI takes a 404 on create for a missing image and pulls (as in moby)
                    raise BadParameter(f"could not get container for {link['name']}: No such container")
            plan.spec.extra["endpoint"] = dataclasses.asdict(plan.endpoint)
            st = self.runtime.create(plan.spec)
            self.records.remember(st)
        if (
            self.network is not None
            and mode not in ("host", "none", "bridge")
            and not mode.startswith("container:")
        ):
            pass  # user networks are attached at start from the endpoint config
        return cid, plan.warnings

    # -- containers: queries ---------------------------------------------------------------------------

    def inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        st = self.records.state(ref)
        execs = self.execs.running_in(st.id)
        out = view.inspect_view(st, self.records.network_settings(st), execs, self.health.health(st.id))
        for name, entry in (out["NetworkSettings"].get("Networks") or {}).items():
            # EndpointSettings.Links: a user network's links as they were given
            given = [f"{lk.name}:{lk.alias}" for lk in self.links.of(st) if lk.network and lk.network == name]
            if given:
                entry["Links"] = given
        if size:
            out.update(container_sizes(self.images, st))
        return out

    def list(
        self,
        all: bool = False,
        filters: dict[str, list[str]] | None = None,
        limit: int | None = -1,
        size: bool = False,
    ) -> list[dict[str, Any]]:
        filters = filters or {}
        states = sorted(self.runtime.list(), key=lambda s: s.created, reverse=True)
        out = []
        for st in states:
            if not all and not st.running and "status" not in filters and "exited" not in filters:
                continue
            ns = self.records.network_settings(st)
            if not view.container_matches(
                st, filters, self._ancestor_match, list(ns.get("Networks") or {}), self.health.status(st.id)
            ):
                continue
            item = view.summary_view(st, ns, self.records.image_name(st), self.health.status(st.id))
            if size:
                item.update(container_sizes(self.images, st))
            out.append(item)
            if limit and limit > 0 and len(out) >= limit:
                break
        return out

    def _ancestor_match(self, ref: str, st: ContainerState) -> bool:
        try:
            return self.images.resolve(ref) == view.docker_of(st).get("Image")
        except Exception:
            return False

    # -- containers: lifecycle -------------------------------------------------------------------------

    def start(self, ref: str) -> None:
        st = self.records.state(ref)
        if st.status in ("running", "paused"):
            raise NotModified()
        try:
            self._check_binds(st)
            self.links.apply_env(st)
            try:
                self.runtime.start(st.id)
            except PortAckError as exc:
                raise EngineConflict(str(exc)) from None
        except Exception:
            # a --rm container that cannot start is removed (dockerd does): `docker run --rm` waits for it
            if (self.records.meta.get(st.id) or {}).get("auto_remove") and not self.records.state(
                st.id
            ).running:
                threading.Thread(target=self.auto_remove, args=(st.id,), daemon=True).start()
            raise

    def _check_binds(self, st: ContainerState) -> None:
        """At (re)start: each share still mounted, a `-v` source deleted since create made again."""
        if st.spec:
            self.shares.check(st.spec.mounts, (view.docker_of(st).get("HostConfig") or {}).get("Binds") or [])

    def raw_output(self, cid: str) -> Any:
        """The container's stdout and stderr as the runtime streams them (the builder's RUN output)."""
        return self.runtime.attach(cid, stdin=False, stdout=True, stderr=True)

    def upper_dir(self, cid: str) -> Path:
        """The container's writable layer (the builder commits a RUN step's from it)."""
        return Path(self.runtime.inspect(cid).upper_dir)

    def unlink(self, ref: str, alias: str) -> None:
        self.links.unlink(ref, alias)

    def id(self, ref: str) -> str:
        return self.records.state(ref).id

    def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        st = self.records.state(ref)
        if not st.running:
            raise NotModified()
        if signal:
            self.runtime.kill(st.id, signal)
        self.runtime.stop(st.id, timeout=timeout)

    def restart(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        st = self.records.state(ref)
        self._check_binds(st)
        self.runtime.restart(st.id, timeout=timeout)

    def kill(self, ref: str, signal: str = "SIGKILL") -> None:
        st = self.records.state(ref)
        if not st.running:
            raise EngineConflict(f"cannot kill container: {ref}: container {st.id} is not running")
        self.runtime.kill(st.id, signal)

    def pause(self, ref: str) -> None:
        self.runtime.pause(self.records.state(ref).id)

    def unpause(self, ref: str) -> None:
        self.runtime.unpause(self.records.state(ref).id)

    def waiter(self, ref: str, condition: str):  # type: ignore[no-untyped-def]
        """Register interest now; the returned callable blocks until the condition and gives (code, err).

        Built on the event bus: subscribing before the reply headers means a fast exit can't be missed.
        """
        st = self.records.state(ref)
        cid = st.id
        sub = self.events.subscribe({"container": [cid], "type": ["container"]})
        st = self.records.state(cid)

        def wait() -> tuple[int, str]:
            try:
                code = st.exit_code
                if condition == "not-running" and not st.running:
                    return code, ""
                seen_running = st.running
                while True:
                    event = sub.get(timeout=1.0)
                    if event is None:
                        # no event for a second: poll, so a missed event cannot leave the client hanging
                        try:
                            now = self.runtime.inspect(cid)
                        except NotFound:
                            return code, ""
                        if now.running or now.finished_at != st.finished_at:
                            seen_running = (
                                True  # it ran since we registered (even if both events were missed)
                            )
                        if now.running:
                            continue
                        if condition == "not-running" or (condition == "next-exit" and seen_running):
                            return now.exit_code, ""
                        if condition == "removed" and seen_running:
                            code = now.exit_code
                            if (self.records.meta.get(cid) or {}).get("auto_remove"):
                                threading.Thread(target=self.auto_remove, args=(cid,), daemon=True).start()
                        continue
                    action = event["Action"]
                    if action == "start":
                        seen_running = True
                    elif action == "die":
                        code = int(event["Actor"]["Attributes"].get("exitCode", code) or 0)
                        if condition != "removed":
                            return code, ""
                    elif action == "destroy":
                        return code, ""
            finally:
                sub.close()

        return wait

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        st = self.records.state(ref)
        if st.running and not force:
            raise EngineConflict(
                f'cannot remove container "/{st.name}": container is running: stop the container before '
                "removing or force remove"
            )
        for attempt in range(5):
            try:
                self.runtime.remove(st.id, force=force)
                break
            except OSError as exc:
                # a force-remove racing a restart-policy restart can hit the supervisor's socket as it goes
                # away (seen under a loaded VM); the next try sees the new state
                if attempt == 4:
                    raise
                log.info("remove of %s: %s; retrying", st.id[:12], exc)
                time.sleep(0.2)
        self.execs.forget_container(st.id)
        if self.network is not None:
            try:
                self.network.forget(st.id)
            except Exception as exc:
                log.debug("network forget %s: %s", st.id[:12], exc)
        self.ports.withdraw(st.id)
        if volumes and st.spec:
            for m in st.spec.mounts:
                if m.type == "volume":
                    name = m.source.rstrip("/").split("/")[-2]
                    if self.volumes.is_anonymous(name):
                        try:
                            self.volumes.remove(name, force=True)
                        except Exception as exc:
                            log.debug("volume %s kept: %s", name, exc)

    def rename(self, ref: str, name: str) -> None:
        name = name.lstrip("/")
        if not valid_name(name):
            raise BadParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        st = self.records.state(ref)
        for other in self.runtime.list():
            if other.name == name and other.id != st.id:
                raise EngineConflict(
                    f'Conflict. The container name "/{name}" is already in use by container "{other.id}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                )
        self.runtime.rename(st.id, name)
        if st.id in self.records.meta:
            self.records.meta[st.id]["name"] = name

    def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        deleted = []
        reclaimed = 0
        for st in self.runtime.list():
            if st.running or not view.container_matches(
                st, {k: v for k, v in filters.items() if k == "label"}, None, []
            ):
                continue
            rw = container_sizes(self.images, st)["SizeRw"]  # dockerd reports the writable layers it removed
            self.remove(st.id)
            deleted.append(st.id)
            reclaimed += rw
        return {"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}

    def update(self, ref: str, body: dict[str, Any]) -> list[str]:
        st = self.records.state(ref)
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
