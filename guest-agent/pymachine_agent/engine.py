"""The engine: composes runtime, image store, network, volumes and events into what the Docker API needs.

Container records live in the runtime's state (the Docker-shaped Config/HostConfig ride along in
`spec.extra["docker"]`), so an agent restart loses nothing. Exec sessions are in memory, as in dockerd.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import dockerview as view
from . import health, links
from .dockerspec import BadParameter, merge_env, translate_create, valid_name
from .engine_io import EngineIO
from .engine_system import EngineSystem
from .errors import Conflict as EngineConflict
from .errors import NotModified
from .events import EventBus, PortAckError, PortBroker
from .fsevents import ChangeMirror
from .images import ImageNotFound, ImageStore
from .network import EndpointConfig, EndpointSettings, NetworkManager, PortSpec
from .runtime import ContainerState, Runtime
from .runtime.errors import NotFound
from .shares import Shares
from .volumes import VolumeStore

log = logging.getLogger("pymachine_agent.engine")


_ADJ = [
    "admiring",
    "brave",
    "clever",
    "dreamy",
    "eager",
    "festive",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "modest",
    "nifty",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "zen",
]
_NOUN = [
    "turing",
    "hopper",
    "lovelace",
    "curie",
    "darwin",
    "euler",
    "fermi",
    "galileo",
    "hawking",
    "kepler",
    "lamport",
    "meitner",
    "newton",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "wozniak",
]


class Engine(EngineIO, EngineSystem):
    def __init__(
        self,
        state_dir: Path | str,
        *,
        ack_timeout: float = 10.0,
        network: bool = True,
        insecure_registries: Iterable[str] = (),
        default_host_ip: str = "",
        shares: Shares | None = None,
    ) -> None:
        """`default_host_ip`: where a port published without a HostIp is bound, as `docker ps`/inspect show
        it. Inside a machine the host agent listens on 127.0.0.1 for those (published ports stay on the
        user's computer unless asked), and the machine's agent.json says so; an engine without settings
        (tests on this host, an ssh-provisioned host) binds them on every guest address, Docker's 0.0.0.0,
        which the empty default shows."""
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.events = EventBus()
        self.ports = PortBroker(ack_timeout=ack_timeout)
        # bind sources are host paths in shares when agent.json lists them (shares.py); their changes on the
        # host reach inotify here through the host agent (fsevents.py)
        self.shares = shares or Shares(None)
        self.changes = ChangeMirror(self.ports.announce)
        self.started = time.time()
        self.lock = threading.RLock()
        self.meta: dict[str, dict[str, Any]] = {}  # id → {name, image, labels, auto_remove} for events
        self.execs: dict[str, Any] = {}
        self._removing: set[str] = set()  # auto-removes in progress
        # registries (host[:port]) reached over plain HTTP, from agent.json (loopback ones always are)
        self.images = ImageStore(self.state_dir / "images", insecure_registries=insecure_registries)
        self.volumes = VolumeStore(self.state_dir / "volumes", in_use=self._volume_users)
        self.network: NetworkManager | None = (
            NetworkManager(
                self.state_dir / "network", on_port_event=self._on_port_event, default_host_ip=default_host_ip
            )
            if network
            else None
        )
        self.runtime = Runtime(
            self.state_dir / "runtime",
            on_netns=self._on_netns,
            on_teardown=self._on_teardown,
            on_event=self._on_runtime_event,
        )
        self.health = health.HealthMonitor(
            run_probe=lambda cid, argv, timeout: health.exec_probe(self.runtime, cid, argv, timeout),
            is_running=lambda cid: self._state(cid).status == "running",
            changed=lambda cid, status: self._on_runtime_event(cid, f"health_status: {status}", {}),
        )

    # -- lifecycle of the engine -----------------------------------------------------------------------

    def start(self) -> None:
        for st in self.runtime.list():
            self._remember(st)
        if self.network is not None:
            self.network.start(running={st.id: st.pid for st in self.runtime.list() if st.pid})
            for port in self.network.published_ports():  # a reconnecting host agent gets them in its resync
                self.ports.restore(port.event("add"))
        self.runtime.reconcile()
        self._watch_update()
        for st in self.runtime.list():
            if st.running:
                self._health_watch(st)

    def close(self) -> None:
        self.runtime.close()
        if self.network is not None:
            self.network.close()

    # -- hooks from runtime and network -----------------------------------------------------------------

    def _remember(self, st: ContainerState) -> None:
        d = view.docker_of(st)
        self.meta[st.id] = {
            "name": st.name,
            "image": (d.get("Config") or {}).get("Image", ""),
            "labels": (d.get("Config") or {}).get("Labels") or {},
            "auto_remove": bool((d.get("HostConfig") or {}).get("AutoRemove")),
            "endpoint": (st.spec.extra or {}).get("endpoint") if st.spec else None,
        }

    def _on_runtime_event(self, cid: str, action: str, attributes: dict[str, str]) -> None:
        meta = self.meta.get(cid, {})
        attrs = {**meta.get("labels", {}), "image": meta.get("image", ""), "name": meta.get("name", "")}
        attrs.update(attributes or {})
        if action == "rename":
            meta["name"] = attrs.get("name", meta.get("name"))
        self.events.publish("container", action, cid, attrs)
        if action in ("start", "die", "destroy"):
            self._watch_update()
        if action == "start":
            self._health_watch(self._state(cid))
        elif action == "die":
            self.health.stop(cid)
        elif action == "destroy":
            self.health.forget(cid)
        if action == "die":
            self.ports_withdraw(cid)
            if meta.get("auto_remove"):
                threading.Thread(target=self._auto_remove, args=(cid,), daemon=True).start()
        if action == "destroy":
            self.meta.pop(cid, None)

    def _health_watch(self, st: ContainerState) -> None:
        config = view.docker_of(st).get("Config") or {}
        self.health.watch(st.id, config.get("Healthcheck"), config.get("Shell"))

    def _auto_remove(self, cid: str) -> None:
        """--rm: remove after the exit. A client waits for the `destroy` (wait?condition=removed), so a
        transient failure is retried rather than leaving `docker run --rm` hanging."""
        with self.lock:
            if cid in self._removing:
                return
            self._removing.add(cid)
        try:
            for attempt in range(20):
                try:
                    self.container_remove(cid, force=True, volumes=True)
                    return
                except NotFound:
                    return  # a racing DELETE already did it
                except Exception as exc:
                    log.warning("auto-remove of %s (try %d): %s", cid[:12], attempt + 1, exc)
                    time.sleep(0.5)
        finally:
            with self.lock:
                self._removing.discard(cid)

    def _endpoint_config(self, cid: str) -> EndpointConfig:
        data = (self.meta.get(cid) or {}).get("endpoint") or {}
        data = dict(data)
        data["networks"] = {k: EndpointSettings(**v) for k, v in (data.get("networks") or {}).items()}
        data["ports"] = [PortSpec(**p) for p in data.get("ports") or []]
        return EndpointConfig(**data)

    def _on_netns(self, cid: str, pid: int) -> None:
        if self.network is None:
            return
        config = self._endpoint_config(cid)
        config.extra_hosts = [*config.extra_hosts, *self._link_hosts(cid)]
        info = self.network.attach(cid, pid, config)
        # The runtime bind-mounted its default /etc files before this hook ran; rewrite them in place (same
        # inode, so the container sees it) with what the network set up: embedded DNS, aliases, hosts.
        ctr_dir = self.state_dir / "runtime" / "containers" / cid
        for name, content in (("resolv.conf", info.resolv_conf), ("hosts", info.hosts)):
            path = ctr_dir / name
            if content and path.exists():
                with open(path, "r+") as f:
                    f.truncate(0)
                    f.write(content)

    def _on_teardown(self, cid: str) -> None:
        if self.network is not None:
            try:
                self.network.detach(cid)
            except Exception as exc:
                log.warning("network detach of %s failed: %s", cid[:12], exc)

    def _on_port_event(self, event: dict) -> None:
        """Called by the network for every publish/unpublish; `add` waits for the host agent's ack."""
        if event.get("action") == "add":
            self.ports.add(event)
        else:
            self.ports.remove(event)

    def _watch_update(self) -> None:
        """Tell the host agent which shared host paths running containers bind-mount now."""
        if self.shares.enabled:
            self.changes.refresh(
                lambda: self.shares.watched(
                    m for st in self.runtime.list() if st.running and st.spec for m in st.spec.mounts
                )
            )

    def ports_withdraw(self, cid: str) -> None:
        self.ports.withdraw(cid)

    # -- lookups ---------------------------------------------------------------------------------------

    def _state(self, ref: str) -> ContainerState:
        try:
            return self.runtime.inspect(ref)
        except NotFound:
            raise NotFound(f"No such container: {ref}") from None

    def _network_settings(self, st: ContainerState) -> dict[str, Any]:
        ep = self.network.endpoint(st.id) if self.network is not None and st.running else None
        ns = ep.network_settings() if ep else view.empty_network_settings()
        if not ep:
            # stopped containers still show the networks they will join at start
            endpoint = (self.meta.get(st.id) or {}).get("endpoint") or {}
            mode = endpoint.get("network_mode") or "bridge"
            names = [] if mode in ("none", "host") or mode.startswith("container:") else [mode]
            names += [n for n in endpoint.get("networks") or {} if n not in names]
            ns["Networks"] = {
                n: {"NetworkID": "", "EndpointID": "", "IPAddress": "", "Gateway": "", "Aliases": None}
                for n in names
            }
        return ns

    def _image_name(self, st: ContainerState) -> str:
        return (view.docker_of(st).get("Config") or {}).get("Image", "")

    def _volume_users(self, name: str) -> list[str]:
        suffix = f"/{name}/_data"
        return [
            st.id
            for st in self.runtime.list()
            if st.spec and any(m.type == "volume" and m.source.endswith(suffix) for m in st.spec.mounts)
        ]

    def image_in_use(self, image_id: str) -> list[str]:
        return [st.id for st in self.runtime.list() if view.docker_of(st).get("Image") == image_id]

    # -- containers: create ----------------------------------------------------------------------------

    def _new_name(self) -> str:
        taken = {s.name for s in self.runtime.list()}
        while True:
            name = f"{random.choice(_ADJ)}_{random.choice(_NOUN)}"
            if name not in taken:
                return name

    def container_create(self, body: dict[str, Any], name: str = "") -> tuple[str, list[str]]:
        name = name.lstrip("/")
        if name and not valid_name(name):
            raise BadParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise BadParameter("config cannot be empty in order to create a container")
        try:
            image_id = self.images.resolve(image_ref)
        except ImageNotFound:
            raise ImageNotFound(f"No such image: {_with_tag(image_ref)}") from None
        image = {"Id": image_id, "config": self.images.config(image_id).get("config") or {}}
        layers = [str(p) for p in self.images.layer_dirs(image_id)]
        with self.lock:
            if name and any(s.name == name for s in self.runtime.list()):
                existing = next(s.id for s in self.runtime.list() if s.name == name)
                raise EngineConflict(
                    f'Conflict. The container name "/{name}" is already in use by container "{existing}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                )
            cid = secrets.token_hex(32)
            name = name or self._new_name()
            plan = translate_create(
                cid, name, body, image, layers, self.volumes.path, host_name=os.uname().nodename
            )
            binds = (body.get("HostConfig") or {}).get("Binds") or []
            plan.spec.mounts = self.shares.check(plan.spec.mounts, binds)
            for vol in plan.named_volumes:
                self.volumes.ensure(vol)
            from .runtime import Mount

            for target in plan.anonymous_targets:
                vol = self.volumes.create(anonymous=True)["Name"]
                plan.spec.mounts.append(Mount("volume", target, self.volumes.path(vol)))
            mode = plan.endpoint.network_mode
            if mode.startswith("container:"):
                other = self._state(mode.split(":", 1)[1])
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
            self._remember(st)
        if (
            self.network is not None
            and mode not in ("host", "none", "bridge")
            and not mode.startswith("container:")
        ):
            pass  # user networks are attached at start from the endpoint config
        return cid, plan.warnings

    # -- containers: queries ---------------------------------------------------------------------------

    def container_inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        st = self._state(ref)
        execs = [eid for eid, e in self.execs.items() if e.container == st.id and e.running]
        out = view.inspect_view(st, self._network_settings(st), execs, self.health.health(st.id))
        for name, entry in (out["NetworkSettings"].get("Networks") or {}).items():
            # EndpointSettings.Links: a user network's links as they were given
            given = [f"{lk.name}:{lk.alias}" for lk in self._links(st) if lk.network and lk.network == name]
            if given:
                entry["Links"] = given
        if size:
            out.update(self.container_sizes(st))
        return out

    def container_list(
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
            ns = self._network_settings(st)
            if not view.container_matches(
                st, filters, self._ancestor_match, list(ns.get("Networks") or {}), self.health.status(st.id)
            ):
                continue
            item = view.summary_view(st, ns, self._image_name(st), self.health.status(st.id))
            if size:
                item.update(self.container_sizes(st))
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

    def container_start(self, ref: str) -> None:
        st = self._state(ref)
        if st.status in ("running", "paused"):
            raise NotModified()
        try:
            self._check_binds(st)
            self._link_env(st)
            try:
                self.runtime.start(st.id)
            except PortAckError as exc:
                raise EngineConflict(str(exc)) from None
        except Exception:
            # a --rm container that cannot start is removed (dockerd does): `docker run --rm` waits for it
            if (self.meta.get(st.id) or {}).get("auto_remove") and not self._state(st.id).running:
                threading.Thread(target=self._auto_remove, args=(st.id,), daemon=True).start()
            raise

    # -- legacy links (links.py) -------------------------------------------------------------------------

    def _links(self, st: ContainerState) -> list[links.Link]:
        return [links.Link(**d) for d in ((st.spec.extra or {}).get("links") or [])] if st.spec else []

    def _link_target(self, st: ContainerState, link: links.Link) -> tuple[ContainerState, str]:
        """A link's running target and its address on the link's network (409/400 as dockerd, else)."""
        target = self._state(link.name)
        if not target.running:
            raise EngineConflict(
                f"Cannot link to a non running container: /{target.name} AS /{st.name}/{link.alias}"
            )
        net = link.network or "bridge"
        nets = self._network_settings(target).get("Networks") or {}
        found = nets.get(net) or next(
            (v for v in nets.values() if v.get("NetworkID", "").startswith(net)), None
        )
        if not found or not found.get("IPAddress"):
            raise BadParameter(f"Cannot link to /{target.name}, as it does not belong to the network {net}")
        return target, found["IPAddress"]

    def _link_env(self, st: ContainerState) -> None:
        """At start: the environment legacy links give (target addresses change between starts)."""
        legacy = [lk for lk in self._links(st) if not lk.network]
        if not legacy and not (st.spec and st.spec.extra.get("link_env")):
            return
        env: list[str] = []
        for link in legacy:
            target, ip = self._link_target(st, link)
            tconfig = view.docker_of(target).get("Config") or {}
            env += links.env(
                st.name, link, ip, list(tconfig.get("ExposedPorts") or {}), tconfig.get("Env") or []
            )
        base = (view.docker_of(st).get("Config") or {}).get("Env") or []

        def change(spec: Any) -> None:
            spec.env = merge_env(env, base)  # the container's own environment wins, as in dockerd
            spec.extra["link_env"] = env

        self.runtime.amend_spec(st.id, change)

    def _link_hosts(self, cid: str) -> list[str]:
        """`/etc/hosts` entries (name:ip) for the container's links; a target gone by now is skipped (a
        restart by policy does not go through container_start's checks)."""
        st = self._state(cid)
        out: list[str] = []
        for link in self._links(st):
            try:
                target, ip = self._link_target(st, link)
            except Exception as exc:
                log.warning("link %s of %s: %s", link.alias, st.name, exc)
                continue
            out += [f"{n}:{ip}" for n in links.host_names(link, target.spec.hostname if target.spec else "")]
        return out

    def container_unlink(self, ref: str, alias: str) -> None:
        """`DELETE /containers/PARENT/ALIAS?link=1`: the parent forgets the link (its hosts line stays
        until the next start, as with dockerd)."""
        st = self._state(ref)
        kept = [lk for lk in self._links(st) if lk.alias != alias]
        if len(kept) == len(self._links(st)):
            raise NotFound(f"Could not find link {alias} of container /{st.name}")

        def change(spec: Any) -> None:
            spec.extra["links"] = [dataclasses.asdict(lk) for lk in kept]
            hc = spec.extra["docker"].setdefault("HostConfig", {})
            hc["Links"] = [lk.to_docker(st.name) for lk in kept if not lk.network] or None

        self.runtime.amend_spec(st.id, change)

    def _check_binds(self, st: ContainerState) -> None:
        """At (re)start: each share still mounted, a `-v` source deleted since create made again."""
        if st.spec:
            self.shares.check(st.spec.mounts, (view.docker_of(st).get("HostConfig") or {}).get("Binds") or [])

    def container_stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        st = self._state(ref)
        if not st.running:
            raise NotModified()
        if signal:
            self.runtime.kill(st.id, signal)
        self.runtime.stop(st.id, timeout=timeout)

    def container_restart(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        st = self._state(ref)
        self._check_binds(st)
        self.runtime.restart(st.id, timeout=timeout)

    def container_kill(self, ref: str, signal: str = "SIGKILL") -> None:
        st = self._state(ref)
        if not st.running:
            raise EngineConflict(f"cannot kill container: {ref}: container {st.id} is not running")
        self.runtime.kill(st.id, signal)

    def container_pause(self, ref: str) -> None:
        self.runtime.pause(self._state(ref).id)

    def container_unpause(self, ref: str) -> None:
        self.runtime.unpause(self._state(ref).id)

    def container_waiter(self, ref: str, condition: str):  # type: ignore[no-untyped-def]
        """Register interest now; the returned callable blocks until the condition and gives (code, err).

        Built on the event bus: subscribing before the reply headers means a fast exit can't be missed.
        """
        st = self._state(ref)
        cid = st.id
        sub = self.events.subscribe({"container": [cid], "type": ["container"]})
        st = self._state(cid)

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
                            if (self.meta.get(cid) or {}).get("auto_remove"):
                                threading.Thread(target=self._auto_remove, args=(cid,), daemon=True).start()
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

    def container_remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        st = self._state(ref)
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
        for eid in [eid for eid, rec in self.execs.items() if rec.container == st.id]:
            self.execs.pop(eid, None)
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

    def container_rename(self, ref: str, name: str) -> None:
        name = name.lstrip("/")
        if not valid_name(name):
            raise BadParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        st = self._state(ref)
        for other in self.runtime.list():
            if other.name == name and other.id != st.id:
                raise EngineConflict(
                    f'Conflict. The container name "/{name}" is already in use by container "{other.id}". '
                    "You have to remove (or rename) that container to be able to reuse that name."
                )
        self.runtime.rename(st.id, name)
        if st.id in self.meta:
            self.meta[st.id]["name"] = name

    def container_prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        deleted = []
        reclaimed = 0
        for st in self.runtime.list():
            if st.running or not view.container_matches(
                st, {k: v for k, v in filters.items() if k == "label"}, None, []
            ):
                continue
            rw = self.container_sizes(st)["SizeRw"]  # dockerd reports the writable layers it removed
            self.container_remove(st.id)
            deleted.append(st.id)
            reclaimed += rw
        return {"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}


def _with_tag(ref: str) -> str:
    last = ref.rsplit("/", 1)[-1]
    if "@" in ref or ":" in last or ref.startswith("sha256:"):
        return ref
    return ref + ":latest"
