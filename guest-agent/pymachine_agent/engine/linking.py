"""Legacy `--link`s of containers, as the engine applies them: the environment at start, the `/etc/hosts`
lines when the network is set up, `docker network disconnect`'s `DELETE ?link=1`. The pure parts (names,
environment variables) are in pymachine_agent/links.py."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .. import dockerview as view
from .. import links
from ..dockerspec import BadParameter, merge_env
from ..errors import Conflict
from ..runtime import ContainerState, Runtime
from ..runtime.errors import NotFound
from .records import ContainerRecords

log = logging.getLogger("pymachine_agent.engine")


class Links:
    def __init__(self, runtime: Runtime, records: ContainerRecords) -> None:
        self.runtime = runtime
        self.records = records

    def of(self, st: ContainerState) -> list[links.Link]:
        return [links.Link(**d) for d in ((st.spec.extra or {}).get("links") or [])] if st.spec else []

    def target(self, st: ContainerState, link: links.Link) -> tuple[ContainerState, str]:
        """A link's running target and its address on the link's network (409/400 as dockerd, else)."""
        target = self.records.state(link.name)
        if not target.running:
            raise Conflict(
                f"Cannot link to a non running container: /{target.name} AS /{st.name}/{link.alias}"
            )
        net = link.network or "bridge"
        nets = self.records.network_settings(target).get("Networks") or {}
        found = nets.get(net) or next(
            (v for v in nets.values() if v.get("NetworkID", "").startswith(net)), None
        )
        if not found or not found.get("IPAddress"):
            raise BadParameter(f"Cannot link to /{target.name}, as it does not belong to the network {net}")
        return target, found["IPAddress"]

    def apply_env(self, st: ContainerState) -> None:
        """At start: the environment legacy links give (target addresses change between starts)."""
        legacy = [lk for lk in self.of(st) if not lk.network]
        if not legacy and not (st.spec and st.spec.extra.get("link_env")):
            return
        env: list[str] = []
        for link in legacy:
            target, ip = self.target(st, link)
            tconfig = view.docker_of(target).get("Config") or {}
            env += links.env(
                st.name, link, ip, list(tconfig.get("ExposedPorts") or {}), tconfig.get("Env") or []
            )
        base = (view.docker_of(st).get("Config") or {}).get("Env") or []

        def change(spec: Any) -> None:
            spec.env = merge_env(env, base)  # the container's own environment wins, as in dockerd
            spec.extra["link_env"] = env

        self.runtime.amend_spec(st.id, change)

    def hosts(self, cid: str) -> list[str]:
        """`/etc/hosts` entries (name:ip) for the container's links; a target gone by now is skipped (a
        restart by policy does not go through the start's checks)."""
        st = self.records.state(cid)
        out: list[str] = []
        for link in self.of(st):
            try:
                target, ip = self.target(st, link)
            except Exception as exc:
                log.warning("link %s of %s: %s", link.alias, st.name, exc)
                continue
            out += [f"{n}:{ip}" for n in links.host_names(link, target.spec.hostname if target.spec else "")]
        return out

    def unlink(self, ref: str, alias: str) -> None:
        """`DELETE /containers/PARENT/ALIAS?link=1`: the parent forgets the link (its hosts line stays
        until the next start, as with dockerd)."""
        st = self.records.state(ref)
        kept = [lk for lk in self.of(st) if lk.alias != alias]
        if len(kept) == len(self.of(st)):
            raise NotFound(f"Could not find link {alias} of container /{st.name}")

        def change(spec: Any) -> None:
            spec.extra["links"] = [dataclasses.asdict(lk) for lk in kept]
            hc = spec.extra["docker"].setdefault("HostConfig", {})
            hc["Links"] = [lk.to_docker(st.name) for lk in kept if not lk.network] or None

        self.runtime.amend_spec(st.id, change)
