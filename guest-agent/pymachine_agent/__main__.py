"""`python3 -m pymachine_agent serve|ping` — the guest agent process (docs/contracts.md §3)."""

from __future__ import annotations

import gc

# The agent's start creates ~20k objects (its imports: modules, functions, classes); the cyclic collector ran
# ~50 passes over them meanwhile, 3-4.5% of the import time under TCG. Off until `serve` has started, which
# then freezes what the start made (later full passes skip it) and turns it back on. Only when run as the
# program: a test importing this module keeps its collector.
HOLD_GC = __name__ == "__main__"
if HOLD_GC:
    gc.disable()
    from pymachine_agent import codecache  # noqa: E402 - before any agent module makes its dataclasses

    codecache.install()  # their methods' code, compiled at image build time (codecache.py)

import argparse  # noqa: E402 - after the collector is held
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from .api.serialport import SerialPort
    from .engine import Engine
    from .kernelgate import KernelGate

DEFAULT_SOCKET = "/run/pymachine/docker.sock"
DEFAULT_STATE = "/var/lib/pymachine"


def ping(socket_path: str, timeout: float = 5.0) -> str:
    """GET /_ping over the unix socket; returns the advertised API version or raises OSError."""
    # here, not at the top: `serve` never needs http.client, whose email and ssl imports cost ~0.3 s of the
    # agent's start at every boot under TCG (tests/unit/test_boot_imports.py)
    import http.client

    class UnixHTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(socket_path)

    conn = UnixHTTPConnection("localhost", timeout=timeout)
    try:
        conn.request("GET", "/_ping")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200 or body != b"OK":
            raise OSError(f"unexpected /_ping answer {resp.status} {body[:100]!r}")
        return resp.getheader("Api-Version") or ""
    finally:
        conn.close()


def _parse_tcp(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def rotating_log(path: Path) -> logging.Handler:
    """The agent runs as long as the VM: its log rotates by size, one old file kept (`<log>.1`), so that a
    client looping on errors cannot fill the guest disk. `PYMACHINE_LOG_MAX_BYTES` overrides the size."""
    import logging.handlers

    limit = int(os.environ.get("PYMACHINE_LOG_MAX_BYTES") or 10 * 1024 * 1024)
    return logging.handlers.RotatingFileHandler(path, maxBytes=limit, backupCount=1)


def read_settings(path: Path | None) -> dict:
    """The agent settings (`agent.json` from the seed: the guest init passes its folder as $PYMACHINE_SEED).
    A missing file means defaults; a malformed one is an error, not silently ignored."""
    if path is None:
        seed = os.environ.get("PYMACHINE_SEED")
        path = Path(seed) / "agent.json" if seed else None
    if path is None or not path.exists():
        return {}
    settings = json.loads(path.read_text() or "{}")
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: agent settings must be a JSON object")
    regs = settings.get("insecure_registries", [])
    if not isinstance(regs, list) or not all(isinstance(r, str) for r in regs):
        raise ValueError(f"{path}: insecure_registries must be a list of host[:port] strings")
    from .network.model import InvalidParameterError
    from .network.ports import parse_host_ip

    try:
        parse_host_ip(str(settings.get("default_host_ip", "")))
    except InvalidParameterError as exc:
        raise ValueError(f"{path}: default_host_ip: {exc}") from None
    api = settings.get("api_timeouts", {})
    if not isinstance(api, dict) or not all(
        k in ("idle", "head", "body") and isinstance(v, (int, float)) and v > 0 for k, v in api.items()
    ):
        raise ValueError(f"{path}: api_timeouts must map idle/head/body to seconds")
    from .shares import parse_shares

    try:
        parse_shares(settings.get("shares"))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return settings


def default_host_ip(settings: dict) -> str:
    """Where ports published without a HostIp are bound, for `docker ps`/inspect to show. A machine's seed
    says so (`default_host_ip`, the host agent's 127.0.0.1); a seed older than that setting still names its
    machine, whose host agent binds 127.0.0.1 all the same. No settings: Docker's 0.0.0.0 (shown for "")."""
    if "default_host_ip" in settings:
        return str(settings["default_host_ip"])
    return "127.0.0.1" if settings.get("machine") else ""


def _since_start() -> float | None:
    """Seconds since this process began (the boot's cost of the agent, docs/machines.md)."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # starttime, clock ticks since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _startup_note(phases: list[tuple[str, float | None]]) -> str:
    """' (imports 2.10 s, engine 3.60 s, 4.12 s after its start)': each phase's end since the process began,
    so a boot's timeline (bench/start.py) shows which part of the agent's start took the time."""
    took = _since_start()
    if took is None:
        return ""
    done = "".join(f"{name} {at:.2f} s, " for name, at in phases if at is not None)
    return f" ({done}{took:.2f} s after its start)"


def serve(
    socket_path: Path,
    state_dir: Path,
    tcp: tuple[str, int] | None,
    network: bool = True,
    ack_timeout: float = 10.0,
    settings: dict | None = None,
) -> int:
    from . import protocol
    from .api import ApiServer, build_router
    from .api.relay import Relay
    from .api.relay import register as register_relay
    from .api.server import container_socket
    from .api.wire import Timeouts
    from .engine import Engine
    from .kernelgate import KernelGate
    from .reserve import arm
    from .shares import Shares

    phases = [("imports", _since_start())]
    settings = settings or {}
    # every host agent connect asks for the checksum of these sources (protocol.info): read them while the
    # engine starts (its nft exec waits), not on the first answer
    threading.Thread(target=protocol.info, name="checksum", daemon=True).start()
    state_dir.mkdir(parents=True, exist_ok=True)
    arm(state_dir)  # on a full disk: room for the engine's own records (reserve.py)
    engine = Engine(
        state_dir,
        network=network,
        ack_timeout=ack_timeout,
        insecure_registries=settings.get("insecure_registries", []),
        default_host_ip=default_host_ip(settings),
        shares=Shares.from_settings(
            settings, engine_socket=str(socket_path), container_socket=str(container_socket(socket_path))
        ),
        young_ports=bool(settings.get("young_ports", True)),
    )
    kernel = KernelGate.from_env()
    timeouts = Timeouts(**settings.get("api_timeouts", {}))
    router = build_router(engine)
    server = ApiServer(router, socket_path, tcp=tcp, timeouts=timeouts)
    relay = Relay(server.handler)  # the host agent's fast path, armed over the SSH link (api/relay.py)
    register_relay(router, relay)
    # the host agent's serial path, where the VM has the port (served once its module is in)
    serial: list[SerialPort] = []

    def started() -> None:
        port = serial_port(server.handler)
        if port is not None:
            serial.append(port)

    # The engine starts before the socket answers when the machine's kernel modules are in (an agent restart,
    # or not a machine of ours); on a cold boot the init loads them only once this agent answers (it asks
    # below), and the engine starts on a thread once they are in: the API holds what needs it meanwhile.
    if kernel.loaded():
        start_engine(engine, kernel)
        phases.append(("engine", _since_start()))
        started()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("pymachine_agent").info(
            "signal %d: shutting down (containers keep running)", signum
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if not engine.ready.is_set():
        kernel.ask()
        threading.Thread(
            target=start_engine, args=(engine, kernel, started), name="engine-start", daemon=True
        ).start()
    if HOLD_GC:
        gc.freeze()
        gc.enable()
    where = f"unix://{socket_path}" + (f" and tcp://{tcp[0]}:{server.tcp_address[1]}" if tcp else "")  # type: ignore[index]
    print(f"pymachine agent serving Docker API on {where}{_startup_note(phases)}", flush=True)
    if HOLD_GC:
        cc = codecache.Stats
        logging.getLogger("pymachine_agent").info(
            "dataclass methods at start: %d from the image's code cache, %d compiled;"
            " regular expressions: %d from the cache, %d compiled",
            *(cc.hits, cc.misses, cc.re_hits, cc.re_misses),
        )
    stop.wait()
    server.stop()  # first: a client must not reach an agent that is going away (re-provision, restart)
    relay.close()
    for port in serial:
        port.close()
    server.drain()  # the requests it took still get their replies
    engine.close()
    return 0


def start_engine(engine: Engine, kernel: KernelGate, then: Callable[[], None] | None = None) -> None:
    """Start the engine once the kernel modules are in. On the start's own thread a failure becomes the
    answer of every request the API holds (503, the reason) and the log's; `/_ping` goes on answering."""
    on_thread = then is not None
    log = logging.getLogger("pymachine_agent")
    kernel.wait_loaded()
    modules_in = _since_start()
    if kernel.error:
        log.error("%s", kernel.error)
        engine.fail(kernel.error)
        return
    try:
        engine.start()
    except Exception as exc:
        if not on_thread:
            raise  # before the socket answers: the agent exits and the init starts it again
        log.exception("the engine did not start")
        engine.fail(f"the engine did not start: {exc} (see /var/log/pymachine-agent.log in the machine)")
        return
    if then is not None:
        then()
        note = _startup_note([("modules", modules_in), ("engine", _since_start())])
        print(f"pymachine agent engine started{note}", flush=True)


def serial_port(handler: type) -> SerialPort | None:
    """Serve the engine on the VM's virtio-serial port, if it has one. Its code (the multiplexer) is imported
    only then: the serial path is off by default, and every module costs boot time under TCG."""
    if not any(_pci_id(dev) in VIRTIO_CONSOLE_IDS for dev in _pci_devices()):
        logging.getLogger("pymachine_agent").info("serial path: no virtio-serial device")
        return None
    from .api.serialport import SerialPort

    port = SerialPort(handler)
    return port if port.start() else None


VIRTIO_CONSOLE_IDS = {("0x1af4", "0x1003"), ("0x1af4", "0x1043")}  # virtio-serial: transitional, modern
PCI_DEVICES = "/sys/bus/pci/devices"


def _pci_devices() -> list[str]:
    try:
        return [os.path.join(PCI_DEVICES, d) for d in os.listdir(PCI_DEVICES)]
    except OSError:
        return []


def _pci_id(dev: str) -> tuple[str, str]:
    try:
        with open(f"{dev}/vendor") as v, open(f"{dev}/device") as d:
            return v.read().strip(), d.read().strip()
    except OSError:
        return "", ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m pymachine_agent", description="pymachine guest agent")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the Docker API and the host protocol")
    p_serve.add_argument("--socket", default=os.environ.get("PYMACHINE_AGENT_SOCKET", DEFAULT_SOCKET))
    p_serve.add_argument("--state", default=os.environ.get("PYMACHINE_AGENT_STATE", DEFAULT_STATE))
    p_serve.add_argument("--tcp", type=_parse_tcp, default=None, help="also listen on HOST:PORT")
    p_serve.add_argument("--no-network", action="store_true", help="containers get no network setup")
    p_serve.add_argument(
        "--ack-timeout", type=float, default=10.0, help="seconds a start waits for the host agent's port ack"
    )
    p_serve.add_argument(
        "--settings", type=Path, default=None, help="agent.json (default: $PYMACHINE_SEED/agent.json)"
    )
    p_serve.add_argument("--log-level", default=os.environ.get("PYMACHINE_AGENT_LOG", "INFO"))
    p_serve.add_argument(
        "--log-file", type=Path, default=None, help="log here, rotated by size (default: stderr)"
    )
    p_ping = sub.add_parser("ping", help="exit 0 when an agent answers /_ping on the socket")
    p_ping.add_argument("--socket", default=os.environ.get("PYMACHINE_AGENT_SOCKET", DEFAULT_SOCKET))
    p_ping.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    if args.command == "ping":
        try:
            version = ping(args.socket, args.timeout)
        except OSError as exc:
            print(f"no agent answers on {args.socket}: {exc}", file=sys.stderr)
            return 1
        print(f"OK api {version}")
        return 0

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[rotating_log(args.log_file)] if args.log_file else None,
    )
    return serve(
        Path(args.socket),
        Path(args.state),
        args.tcp,
        network=not args.no_network,
        ack_timeout=args.ack_timeout,
        settings=read_settings(args.settings),
    )


if __name__ == "__main__":
    sys.exit(main())
