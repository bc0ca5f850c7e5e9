"""`/networks/*` and `/volumes/*`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..network import EndpointSettings
from . import bodies
from .http import HTTPError, Request
from .server import Router

if TYPE_CHECKING:
    from ..engine import NetworkService, VolumeService


def register(router: Router, networks: NetworkService, volumes: VolumeService) -> None:  # noqa: C901
    r = router.route

    @r("GET", "/networks")
    def network_list(req: Request) -> tuple[int, list]:
        return 200, networks.list(req.filters())

    @r("POST", "/networks/create")
    def network_create(req: Request) -> tuple[int, dict]:
        body = req.json(bodies.NETWORK_CREATE)
        name = body.get("Name") or ""
        if not name:
            raise HTTPError(400, "network name cannot be empty")
        ipam = (body.get("IPAM") or {}).get("Config") or [{}]
        # IPAM.Config holds at most one IPv4 and one IPv6 entry, in any order
        first = next((c for c in ipam if ":" not in (c.get("Subnet") or "")), {})
        six = next((c for c in ipam if ":" in (c.get("Subnet") or "")), {})
        return 201, networks.create(
            name,
            driver=body.get("Driver") or "bridge",
            subnet=first.get("Subnet") or "",
            gateway=first.get("Gateway") or "",
            internal=bool(body.get("Internal")),
            labels=body.get("Labels") or {},
            options=body.get("Options") or {},
            check_duplicate=body.get("CheckDuplicate", True) is not False,
            ipv6=bool(body.get("EnableIPv6")),
            subnet6=six.get("Subnet") or "",
            gateway6=six.get("Gateway") or "",
        )

    @r("POST", "/networks/prune")
    def network_prune(req: Request) -> tuple[int, dict]:
        return 200, networks.prune()

    @r("GET", "/networks/{ref}")
    def network_inspect(req: Request, ref: str) -> tuple[int, dict]:
        return 200, networks.inspect(ref)

    @r("DELETE", "/networks/{ref}")
    def network_remove(req: Request, ref: str) -> int:
        networks.remove(ref)
        return 204

    @r("POST", "/networks/{ref}/connect")
    def network_connect(req: Request, ref: str) -> int:
        body = req.json(bodies.NETWORK_CONNECT)
        ep = body.get("EndpointConfig") or {}
        settings = EndpointSettings(
            aliases=list(ep.get("Aliases") or []),
            ipv4_address=((ep.get("IPAMConfig") or {}).get("IPv4Address")) or "",
            ipv6_address=((ep.get("IPAMConfig") or {}).get("IPv6Address")) or "",
        )
        networks.connect(ref, body.get("Container") or "", settings)
        return 200

    @r("POST", "/networks/{ref}/disconnect")
    def network_disconnect(req: Request, ref: str) -> int:
        body = req.json(bodies.NETWORK_DISCONNECT)
        networks.disconnect(ref, body.get("Container") or "", force=bool(body.get("Force")))
        return 200

    # -- volumes ---------------------------------------------------------------------------------

    @r("GET", "/volumes")
    def volume_list(req: Request) -> tuple[int, dict]:
        return 200, {"Volumes": volumes.list(req.filters()), "Warnings": None}

    @r("POST", "/volumes/create")
    def volume_create(req: Request) -> tuple[int, dict]:
        body = req.json(bodies.VOLUME_CREATE)
        driver = body.get("Driver") or "local"
        if driver != "local":
            raise HTTPError(400, f"volume driver {driver!r} is not supported (only local)")
        return 201, volumes.create(
            body.get("Name") or "", labels=body.get("Labels"), options=body.get("DriverOpts")
        )

    @r("POST", "/volumes/prune")
    def volume_prune(req: Request) -> tuple[int, dict]:
        return 200, volumes.prune(req.filters())

    @r("GET", "/volumes/{name}")
    def volume_inspect(req: Request, name: str) -> tuple[int, dict]:
        return 200, volumes.inspect(name)

    @r("DELETE", "/volumes/{name}")
    def volume_remove(req: Request, name: str) -> int:
        volumes.remove(name, force=req.qbool("force"))
        return 204

    # -- things the CLI probes that we do not have ------------------------------------------------

    @r("GET", "/plugins/{name:path}/json")
    def plugin(req: Request, name: str) -> None:
        raise HTTPError(404, f"plugin {name!r} not found")
