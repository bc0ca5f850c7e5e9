"""What `pymachine version` reports: this client, the API it speaks, the guest image recipe and the agent
it ships (guest agent), and, when the machine runs, what its engine says about itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pymachine_agent import protocol

# The Docker Engine API version that the CLI's docker-py client asks for. Here, not in containers.py, so
# that `pymachine --version` does not load docker-py.
API_VERSION = "1.44"


@dataclass(frozen=True)
class EngineVersion:
    """The engine's own answer to `GET /version` (None fields when it did not say)."""

    version: str | None
    api_version: str | None
    min_api_version: str | None
    kernel: str | None
    os: str | None
    arch: str | None


@dataclass(frozen=True)
class VersionInfo:
    client: str
    api_version: str
    guest_image_recipe: str
    agent_version: str
    agent_protocol: int
    agent_checksum: str
    machine: str | None = None
    engine: EngineVersion | None = None
    engine_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def client_version() -> str:
    import importlib.metadata  # 10 ms, here: containers.py (every container verb) imports this module

    try:
        return importlib.metadata.version("pymachine")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def engine_version(machine: str) -> EngineVersion:
    """The running machine's engine version; PymachineError when it is not running or does not answer."""
    from . import containers, machines

    m = machines.get(machine)
    if m.state != "running":
        from .status import not_running

        raise not_running(m)
    dc = containers.client(machine, ensure=False)
    with containers.api_errors():
        body = dc.api.version()
    return EngineVersion(
        version=body.get("Version"),
        api_version=body.get("ApiVersion"),
        min_api_version=body.get("MinAPIVersion"),
        kernel=body.get("KernelVersion"),
        os=body.get("Os"),
        arch=body.get("Arch"),
    )


def collect(machine: str | None = None) -> VersionInfo:
    """The client side always; the engine side of `machine` when given and running (else `engine_error`)."""
    from . import image

    engine, error = None, None
    if machine is not None:
        from .errors import PymachineError

        try:
            engine = engine_version(machine)
        except PymachineError as exc:
            error = exc.message
    return VersionInfo(
        client=client_version(),
        api_version=API_VERSION,
        guest_image_recipe=image.recipe_hash(),
        agent_version=protocol.AGENT_VERSION,
        agent_protocol=protocol.PROTOCOL_VERSION,
        agent_checksum=protocol.source_checksum(),
        machine=machine,
        engine=engine,
        engine_error=error,
    )
