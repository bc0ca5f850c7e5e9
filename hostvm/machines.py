"""The machine façade: create, start (in named stages), stop, delete, list, inspect.

State is the truth: whether a machine runs is asked of the driver (libvirt, or the pidfile + /proc) on every
call; files in the machine folder hold only what cannot be asked (config, the chosen SSH port).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

from . import config as cfgmod
from . import paths, proc, qemu_user, remote_libvirt, savestate, seed, share_hotplug, shares, ssh, store
from . import syncshare_state as sync_state  # noqa: I001
from .domain import VMSpec
from .drivers import Driver, DriverState, get_driver
from .errors import NotFoundError, PymachineError, StageFailed, UsageError
from .hostagent.ports import DEFAULT_HOST_IP
from .machine_settings import SettingsRequest, SettingsResult, grow_disk, pending, started_settings
from .poweroff import power_off
from .progress import Progress, StageProgress, Stages

log = logging.getLogger(__name__)
GUEST_SOCKET = "/run/pymachine/docker.sock"


@dataclass
class Machine:
    name: str
    state: str  # running | stopped | unknown (driver unreachable)
    cpus: int
    memory: int  # bytes
    disk: int  # bytes
    ssh_port: int | None
    accelerator: str | None  # of the last start: kvm | tcg
    driver: str
    uri: str  # where it runs (libvirt URI, or "qemu (direct)")
    pid: int | None
    dir: str
    console_log: str
    image: str  # recipe hash of the base image
    shares: list[dict[str, Any]] = field(default_factory=list)  # path, readonly, transport, pending
    share_transport: str = "auto"  # as configured; each share's `transport` is the one in use
    share_problems: list[str] = field(default_factory=list)  # e.g. a virtiofsd that exited
    saved_state: dict[str, Any] | None = None  # `stop` saved it: the next `start` resumes (savestate.py)
    # running: settings changed since the start, [{field, old, new}] (machine_settings.pending)
    pending: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- lookup -----------------------------------------------------------------------------------------------
def exists(name: str) -> bool:
    return paths.machine(name).config.exists()


def load_config(name: str) -> cfgmod.MachineConfig:
    data = store.read_json(paths.machine(name).config)
    if data is None:
        raise NotFoundError(f"machine '{name}' does not exist", hint=_missing_hint(name))
    return cfgmod.MachineConfig.from_json(data)


def _missing_hint(name: str) -> str:
    """Name the machines there are: a newcomer whose one machine is not `default` learns how to pick it."""
    names = machine_names()
    if not names:
        return f"create it: pymachine create {name} --start"
    if name != cfgmod.DEFAULT_NAME:  # named by the person: a typo, or one still to make
        return f"the machines here: {', '.join(names)}; or create it: pymachine create {name}"
    pick = names[0] if len(names) == 1 else "NAME"  # none named: say how to name one
    return (
        f"the machines here: {', '.join(names)}; pick one: pymachine --machine {pick} …, or "
        f"export PYMACHINE_MACHINE={pick}; or create it: pymachine create {name}"
    )


def driver_for(cfg: cfgmod.MachineConfig) -> Driver:
    return get_driver(cfg.driver, cfg.connect)


def get(name: str) -> Machine:
    cfg = load_config(name)
    mp = paths.machine(name)
    st = store.read_json(mp.state, {}) or {}
    drv = driver_for(cfg)
    try:
        state = drv.state(name).value
        pid = drv.pid(name) if state == "running" else None
    except PymachineError as exc:
        log.debug("state of %s: %s", name, exc)
        state, pid = "unknown", None
    running = state == "running"
    return Machine(
        name=name,
        state=state,
        cpus=cfg.cpus,
        memory=cfg.memory,
        disk=cfg.disk,
        ssh_port=st.get("ssh_port"),
        accelerator=st.get("accelerator"),
        driver=cfg.driver,
        uri=drv.describe(),
        pid=pid,
        dir=str(mp.dir),
        console_log=str(mp.console_log),
        image=str(cfg.image.get("recipe_hash", "")),
        shares=share_list(cfg, st, running, drv),
        share_transport=cfg.share_transport,
        share_problems=shares.problems(name, running),
        saved_state=savestate.describe(name),
        pending=[asdict(c) for c in pending(cfg, st)] if running else [],
    )


def share_list(
    cfg: cfgmod.MachineConfig, st: dict[str, Any], running: bool, drv: Driver
) -> list[dict[str, Any]]:
    """The configured shares with the transport in use; on a running machine, a share added or removed since
    it started is `pending` (it applies at the next start)."""
    started = {(s["path"], s["readonly"]) for s in st.get("shares") or []} if running else None
    if running and st.get("share_transport"):
        transport = str(st["share_transport"])
    else:
        try:
            transport = shares.choose_transport(drv.capabilities, cfg.share_transport)
        except PymachineError:
            transport = "unavailable"
    out = [
        {"path": s.path, "readonly": s.readonly, "transport": "sync" if s.sync else transport, "pending":
         "add" if started is not None and (s.path, s.readonly) not in started else None}
        for s in cfg.shares
    ]  # fmt: skip
    sync_state.annotate(out, cfg.name, running)
    configured = {(s.path, s.readonly) for s in cfg.shares}
    for path, ro in sorted(started - configured) if started else []:
        out.append({"path": path, "readonly": ro, "transport": transport, "pending": "remove"})
    return out


def machine_names() -> list[str]:
    """The machines there are (a folder with a config.json), sorted."""
    root = paths.machines_dir()
    if not root.is_dir():
        return []
    return [d.name for d in sorted(root.iterdir()) if (d / "config.json").exists()]


def list_machines() -> list[Machine]:
    return [get(name) for name in machine_names()]


# -- create / delete --------------------------------------------------------------------------------------
def create(
    name: str | None = None,
    cpus: int | str | None = None,
    memory: int | str | None = None,
    disk: int | str | None = None,
    driver: str | None = None,
    connect: str | None = None,
    progress: Progress | None = None,
    mounts: list[str] | None = None,
    home_mount: bool = True,
    share_transport: str | None = None,
    idle_suspend: float | str | None = None,
    cluster: dict[str, Any] | None = None,
) -> Machine:
    """Validate everything first; then build the machine folder, removing it again if any step fails.
    `cluster` makes it a Swarm node (hostvm/cluster.py): the cluster image variant, dockerd as its engine."""
    say = progress or (lambda _m: None)
    args = dict(name=name, cpus=cpus, memory=memory, disk=disk, driver=driver, connect=connect)
    args |= dict(mounts=mounts, home_mount=home_mount, share_transport=share_transport)
    args |= dict(idle_suspend=idle_suspend)
    common = dict(ncpus_host=cfgmod.host_cpus(), fallback_driver=cfgmod.default_driver())
    from pymachine.images import CLUSTER_RECIPE

    from .image import ensure_image, least_disk_bytes

    variant = CLUSTER_RECIPE if cluster else None
    # Every check that needs no image before the image (a build takes minutes): the disk against the size
    # every image has at least (the built one's when it is cached), and a share transport the driver can't do.
    cfg = cfgmod.build(**args, **common, image_bytes=least_disk_bytes(variant))  # type: ignore[arg-type]
    if cfg.share_transport != "auto":
        shares.choose_transport(driver_for(cfg).capabilities, cfg.share_transport)
    mp = paths.machine(cfg.name)
    if mp.dir.exists() and not _remove_half_created(cfg.name):
        raise UsageError(
            f"machine '{cfg.name}' already exists", hint=f"pick another name, or: pymachine delete {cfg.name}"
        )
    stages = Stages(["guest image", "machine files"], say, source="create")
    with stages.step("guest image"):
        manifest = ensure_image(say, variant=variant)
    cfg = cfgmod.build(**args, **common, image_bytes=manifest.virtual_bytes)  # type: ignore[arg-type]
    cfg.image = {
        "kernel": str(manifest.kernel),
        "initrd": str(manifest.initrd),
        "disk": str(manifest.disk),
        "cmdline": manifest.cmdline,
        "recipe_hash": manifest.recipe_hash,
    }
    cfg.cluster = cluster
    paths.ensure_home()
    mp.dir.parent.mkdir(parents=True, exist_ok=True)
    with _creating(cfg.name):
        _clear_half_created(mp)
        try:
            mp.dir.mkdir(mode=0o700)  # the atomic claim on the name: a concurrent create of it fails here
        except FileExistsError:
            raise UsageError(f"machine '{cfg.name}' already exists") from None
        _build_folder(cfg, mp, stages)
    return get(cfg.name)


@contextlib.contextmanager
def _creating(name: str) -> Iterator[None]:
    """Held by a create from before it claims the folder until config.json is written (beside the folder: the
    folder may not exist yet). A folder without config.json whose creator does not hold this is what a
    create killed half-way left."""
    from . import locks

    lock = paths.create_lock(name)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with locks.held(lock):
        yield


def _remove_half_created(name: str) -> bool:
    """Remove the folder a create killed half-way left (no config.json); True if the name is free now."""
    with _creating(name):
        return _clear_half_created(paths.machine(name))


def _clear_half_created(mp: paths.MachinePaths) -> bool:
    if not mp.dir.exists() or mp.config.exists():
        return not mp.dir.exists()
    log.warning("removing %s: a create of machine '%s' stopped half-way", mp.dir, mp.name)
    shutil.rmtree(mp.dir, ignore_errors=True)
    return not mp.dir.exists()


def _build_folder(cfg: cfgmod.MachineConfig, mp: paths.MachinePaths, stages: Stages) -> None:
    try:
        with stages.step("machine files"):  # keys, seed, disk overlay
            ssh.create_keys(cfg.name)
            if remote_libvirt.is_remote(cfg.connect):
                remote_libvirt.pin_host(cfg.name, cfg.connect, stages.say)  # type: ignore[arg-type]
            write_seed(cfg.name, [])
            base = cfg.image["disk"]
            proc.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, mp.disk, str(cfg.disk)]
            )
            from .image import register_user

            register_user(base, mp.disk)  # so that no home's prune or --force pulls it away
            store.write_json(mp.state, {"ssh_port": pick_port(cfg.name, None)})
            store.write_json(mp.config, cfg.to_json())  # last: a folder without config.json is not a machine
    except BaseException:
        shutil.rmtree(mp.dir, ignore_errors=True)
        raise


def write_seed(name: str, devices: list[shares.ShareDevice]) -> None:
    """The seed disk from the machine's keys and settings; rewritten at each start with the shares of that
    start (`pymachine mount add|rm` apply then)."""
    mp = paths.machine(name)
    settings: dict[str, Any] = {"machine": name, "default_host_ip": DEFAULT_HOST_IP}
    # (the guest reports ports published without a HostIp at the address the host agent binds)
    node = (store.read_json(mp.config, {}) or {}).get("cluster")  # a Swarm node: its eth1 address (pmnode.py)
    if node:
        settings["cluster"] = {"address": node["address"]}
    if devices:
        settings["shares"] = [{k: d.guest()[k] for k in ("path", "readonly", "transport")} for d in devices]
    seed.write_seed(
        mp.seed,
        seed.build_seed(
            hostname=name,
            authorized_keys=(mp.ssh_key.parent / (mp.ssh_key.name + ".pub")).read_text(),
            host_key_private=mp.host_key.read_bytes(),
            host_key_public=(mp.host_key.parent / (mp.host_key.name + ".pub")).read_text(),
            agent_settings=settings,
            mounts=shares.guest_entries(devices),
        ),
    )


# -- shares -----------------------------------------------------------------------------------------------
def mount_add(name: str, path: str) -> tuple[Machine, share_hotplug.ShareChange]:
    """Add `PATH[:ro]` to the machine's shares (the one settings operation, `configure`). Returns (machine,
    when the share appears: now when hot-plugged over sshfs, else at the next start or after a restart)."""
    req = SettingsRequest(add_shares=(path,), share_field="mount")
    return _share_change(configure(name, req), name)


def configure(name: str, request: SettingsRequest) -> SettingsResult:
    """Change CPUs, memory, disk (grow only) and shares, validated against the host, effective at the next
    start (`pymachine set`, `mount add|rm`, the app's Settings dialog): see machine_settings.py."""
    from .machine_settings import apply

    return apply(name, request)


def _share_change(result: SettingsResult, name: str) -> tuple[Machine, share_hotplug.ShareChange]:
    if not result.shares:
        raise UsageError(f"nothing changed: machine '{name}' already shares that folder so")
    return result.machine, result.shares[-1].change


def set_share_transport(name: str, transport: str) -> tuple[Machine, bool]:
    """auto | virtiofs | 9p | sshfs for this machine's shares (checked against its driver; next start)."""
    cfg = load_config(name)
    shares.choose_transport(driver_for(cfg).capabilities, transport)  # refuses what the driver cannot do
    with _locked(name):
        cfg = load_config(name)
        cfg.share_transport = transport
        store.write_json(paths.machine(name).config, cfg.to_json())
    m = get(name)
    return m, m.state == "running"


def mount_rm(name: str, path: str) -> tuple[Machine, share_hotplug.ShareChange]:
    req = SettingsRequest(remove_shares=(path,), share_field="mount")
    return _share_change(configure(name, req), name)


def _running(cfg: cfgmod.MachineConfig) -> bool:
    return driver_for(cfg).state(cfg.name) is DriverState.RUNNING


def delete(name: str, force: bool = False) -> None:
    mp = paths.machine(name)
    if mp.dir.exists() and not mp.config.exists() and _remove_half_created(name):
        return  # it was only what a killed create left
    cfg = load_config(name)
    drv = driver_for(cfg)
    with _locked(name):
        if drv.capabilities.existing_host:
            return _delete_on_host(name, drv, force)
        if drv.state(name) is DriverState.RUNNING:
            if not force:
                raise PymachineError(
                    f"machine '{name}' is running", hint=f"stop it first, or: pymachine delete --force {name}"
                )
            _stop_host_agent(name)
            drv.force_stop(name)
        _stop_host_agent(name)  # also when QEMU died under it: never left behind to serve a new machine
        drv.cleanup(name)
        if remote_libvirt.is_remote(cfg.connect):
            remote_libvirt.delete_volumes(drv.conn(), name)  # type: ignore[attr-defined]
        shares.stop_daemons(name)
        shutil.rmtree(paths.machine(name).dir)
    _remove_docker_context(name)


def _delete_on_host(name: str, drv: Driver, force: bool) -> None:
    """A machine on an existing host: remove what create installed there, then the machine folder. With
    `force`, an unreachable host does not keep the folder (what stays on the host is said)."""
    from . import remote_host

    try:
        if drv.state(name) is DriverState.RUNNING and not force:
            raise PymachineError(
                f"machine '{name}' is running", hint=f"stop it first, or: pymachine delete --force {name}"
            )
        _stop_host_agent(name)
        remote_host.delete(name, lambda m: log.info("%s", m))
    except PymachineError as exc:
        if not force or "is running" in exc.message:
            raise
        _stop_host_agent(name)
        log.warning("machine '%s': its host was not cleaned up (%s); removing it here only", name, exc)
    shutil.rmtree(paths.machine(name).dir)
    _remove_docker_context(name)


# -- ports ------------------------------------------------------------------------------------------------
def pick_port(name: str, wanted: int | None) -> int:
    """`wanted` if it is free and no other machine holds it; else a fresh ephemeral port."""
    taken = set()
    root = paths.machines_dir()
    if root.is_dir():
        for d in root.iterdir():
            if d.name != name:
                port = (store.read_json(d / "state.json", {}) or {}).get("ssh_port")
                if port:
                    taken.add(int(port))
    if wanted and wanted not in taken and _port_free(wanted):
        return wanted
    for _ in range(50):
        with socket.socket() as s:
            s.bind((ssh.HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
    raise PymachineError("no free TCP port on 127.0.0.1 for SSH")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ssh.HOST, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One lifecycle operation per machine at a time (start racing delete would leave half a machine).

    The lock file lives in the machine's folder: an operation that waited for it while a `delete` held it
    gets the lock of a folder that is gone, and must not go on (a `start` booted a deleted machine and failed
    with a raw FileNotFoundError). It says the machine does not exist, as it would have a moment later."""
    from . import locks

    lock_path = paths.machine(name).dir / ".lock"
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(locks.held(lock_path))
        except FileNotFoundError:
            load_config(name)  # the folder is gone: its "does not exist"
            raise
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            raise NotFoundError(
                f"machine '{name}' does not exist (deleted meanwhile)", hint="see 'pymachine list'"
            )
        load_config(name)
        yield


# -- start / stop -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """One named step of `start`; timeouts are for KVM and for TCG (software emulation, ~5x slower boots)."""

    name: str
    kvm_s: float
    tcg_s: float
    hint: str

    def timeout(self, accel: str) -> float:
        return self.tcg_s if accel == "tcg" else self.kvm_s


# Timeouts (KVM s, TCG s). The TCG ones are generous: on a busy 2-core host a TCG boot to sshd was measured
# at 5 s idle and 65 s under a load of 10.
STAGES = (
    Stage(
        "domain up",
        30,
        120,
        "the hypervisor did not start the VM: see the error above; run 'pymachine doctor'",
    ),
    Stage("ssh banner", 60, 300, "the guest did not boot as far as sshd: read the console log"),
    Stage("ssh auth", 30, 120, "sshd refused the machine's key or answered with another host key"),
    Stage(
        "guest agent answers",
        60,
        300,
        f"the guest agent did not create {GUEST_SOCKET}: look at the console log, or run "
        "'pymachine ssh NAME -- tail /var/log/pymachine-agent.log'",
    ),
    Stage(
        "host agent", 60, 120, "the host agent did not come up: read its log (ha.log in the machine folder)"
    ),
)
RESUME_SKIPS = ("ssh banner", "ssh auth", "guest agent answers")
STOP_TIMEOUT = {"kvm": 30.0, "hvf": 30.0, "whpx": 30.0, "tcg": 60.0}


def stage_timeout(name: str, accel: str) -> float:
    return next(s.timeout(accel) for s in STAGES if s.name == name)


def accelerator() -> str:
    """kvm | hvf | whpx | tcg, as `hostvm.accel.probe()` decides (cached there); TCG without that module."""
    try:
        from .accel import probe
    except ImportError:
        return "tcg"
    name = str(getattr(probe(), "name", "tcg")).lower()
    return name if name in ("kvm", "hvf", "whpx") else "tcg"


def wants_engine_port(drv: Driver, name: str) -> bool:
    """Whether a cold boot gives the VM the engine socket's virtio-serial port (hostagent/serialpath.py): the
    driver can put its host end in the machine folder, PYMACHINE_ENGINE_PORT is "on" (off by default), and the
    socket's path fits the OS's limit (else docker.sock takes the fast path or SSH, as without the port)."""
    from .hostagent.serialpath import switched_off

    if not drv.capabilities.engine_port or switched_off():
        return False
    try:
        paths.check_socket_path(paths.machine(name).engine_port)
    except PymachineError:
        return False
    return True


def vm_spec(
    cfg: cfgmod.MachineConfig,
    port: int,
    accel: str,
    devices: tuple[shares.ShareDevice, ...] = (),
    engine_port: bool = False,
) -> VMSpec:
    mp = paths.machine(cfg.name)
    for what in ("kernel", "initrd", "disk"):
        if not os.path.exists(cfg.image.get(what, "")):
            raise PymachineError(
                f"the base image of machine '{cfg.name}' is gone ({cfg.image.get(what)})",
                hint="the image cache was cleared: recreate the machine (pymachine delete, pymachine create)",
            )
    # Under qemu:///system QEMU runs as the owner of the machine folder (see domain.domain_xml), unless that
    # is root: QEMU never runs as root (qemu_user.py).
    uri = cfg.connect or _default_uri()
    system = cfg.driver == "libvirt" and uri == "qemu:///system"
    st = os.stat(mp.dir)
    uid, gid = (st.st_uid, st.st_gid) if system else (None, None)
    runas = ""
    local_libvirt = cfg.driver == "libvirt" and not urlparse(uri).hostname
    if qemu_user.needed() and (cfg.driver == "qemu" or (local_libvirt and not uid)):
        if cfg.driver == "qemu":
            who = qemu_user.account()
            runas = who.name
        else:
            who = qemu_user.libvirt_account()
            uid, gid = who.uid, who.gid
        kernel, initrd, base = (cfg.image[k] for k in ("kernel", "initrd", "disk"))
        qemu_user.grant(who, readable=[kernel, initrd, base, mp.seed], writable=[mp.disk])
    return VMSpec(
        name=cfg.name,
        cpus=cfg.cpus,
        memory_mib=cfg.memory // cfgmod.MiB,
        kernel=cfg.image["kernel"],
        initrd=cfg.image["initrd"],
        cmdline=guest_cmdline(cfg.image["cmdline"], accel),
        disk=str(mp.disk),
        seed=str(mp.seed),
        console_log=str(mp.console_log),
        ssh_port=port,
        accel=accel,
        owner=str(mp.dir),
        uid=uid,
        gid=gid,
        runas=runas,
        shares=devices,
        private_mcast=(cfg.cluster or {}).get("mcast", ""),
        private_mac=(cfg.cluster or {}).get("mac", ""),
        engine_port=str(mp.engine_port) if engine_port else "",
    )


def qemu_account(cfg: cfgmod.MachineConfig, spec: VMSpec) -> qemu_user.Account | None:
    """Who QEMU runs as when that is not us (it must be able to connect to virtiofsd's sockets)."""
    if spec.runas:
        return qemu_user.account()
    if spec.uid is not None and spec.uid != os.geteuid():
        return qemu_user.Account(name=f"uid {spec.uid}", uid=spec.uid, gid=spec.gid or spec.uid)
    return None


def guest_cmdline(cmdline: str, accel: str) -> str:
    """The image's command line, plus `no_timer_check` under TCG: on a loaded host the emulated timer misses
    the kernel's IO-APIC check window and the boot panics ("IO-APIC + timer doesn't work!")."""
    if accel == "tcg" and "no_timer_check" not in cmdline.split():
        return f"{cmdline} no_timer_check"
    return cmdline


def _default_uri() -> str:
    from .drivers.libvirt import default_uri

    return default_uri()


def start(name: str, progress: Progress | None = None, cold: bool = False) -> Machine:
    """Resume `name` from its saved state, else boot it (`cold`: always boot), and wait through every
    readiness stage; idempotent when running."""
    say = progress or (lambda _m: None)
    cfg = load_config(name)
    drv = driver_for(cfg)
    mp = paths.machine(name)
    if drv.capabilities.existing_host:  # no VM: the agent on that host (remote_host.py)
        from . import remote_host

        with _locked(name):
            remote_host.start(name, say, _host_agent_launcher())
        return get(name)
    with _locked(name):
        stages = list(STAGES)
        launcher = _host_agent_launcher()
        if launcher is None:
            stages = [s for s in stages if s.name != "host agent"]
        state = store.read_json(mp.state, {}) or {}
        running = drv.state(name) is DriverState.RUNNING
        if running:
            wake(name, "start")  # the readiness checks below need a guest that runs
        accel = state.get("accelerator", "tcg") if running else accelerator()
        client = None
        resumed: dict[str, Any] | None = None
        resume_work = None  # the clock step and share remounts, run while the host agent connects
        try:
            for i, stage in enumerate(stages, 1):
                say(StageProgress(i, len(stages), stage.name))
                deadline = time.monotonic() + stage.timeout(accel)
                started = time.monotonic()
                try:
                    if stage.name == "domain up" and not running:
                        resumed = _resume(name, cfg, drv, accel, cold, say, launcher)
                        state = (store.read_json(mp.state, {}) or {}) if resumed else state
                        # the host agent steps the clock at link-up itself; shares need the remount
                        if resumed and (savestate.share_devices(resumed.get("shares") or []) or not launcher):
                            resume_work = savestate.AfterResume(
                                name, resumed, run=_agent_run(name), remount=_agent_remount(name)
                            )
                    if resumed and stage.name in RESUME_SKIPS:  # passed before the save
                        say(StageProgress(i, len(stages), stage.name, "done", 0.0))
                        continue
                    if stage.name == "domain up" and not running and resumed is None:
                        drv.cleanup(name)
                        if (state.get("settings") or {}).get("disk") != cfg.disk:  # `set` while it ran
                            grow_disk(mp.disk, cfg.disk)  # (or unknown: a no-op when it has the size)
                        port = pick_port(name, state.get("ssh_port"))
                        state = {"ssh_port": port, "accelerator": accel, "started": time.time()}
                        store.write_json(mp.state, state)
                        mp.console_log.unlink(missing_ok=True)
                        transport = shares.choose_transport(drv.capabilities, cfg.share_transport)
                        devices = shares.devices(cfg, transport)
                        write_seed(name, devices)
                        engine_port = wants_engine_port(drv, name)
                        mp.engine_port.unlink(missing_ok=True)  # a dead QEMU's: the new one binds the path
                        spec = vm_spec(cfg, port, accel, tuple(devices), engine_port)
                        if remote_libvirt.is_remote(cfg.connect):  # its files go to the host's pool
                            spec = remote_libvirt.prepare(
                                drv.conn(), spec, cfg.image.get("recipe_hash", ""), say
                            )  # type: ignore[attr-defined]
                        shares.start_daemons(name, devices, qemu_account(cfg, spec))
                        state |= {"share_transport": transport, "shares": [asdict(s) for s in cfg.shares]}
                        state["settings"] = started_settings(cfg)
                        state["engine_port"] = engine_port  # the agent holds it, a saved state records it
                        store.write_json(mp.state, state)
                        try:
                            drv.start(spec)
                        except BaseException:
                            shares.stop_daemons(name)
                            raise
                    elif stage.name == "ssh banner":
                        if not ssh.wait_banner(int(state["ssh_port"]), deadline, name):
                            raise PymachineError(
                                f"no SSH banner on 127.0.0.1:{state['ssh_port']}"
                                + _console_panic(mp.console_log)
                            )
                        if launcher is not None and not running:
                            # sshd answers: the host agent's start and handshake overlap the stages below
                            launcher.start_early(name)
                    elif stage.name == "ssh auth":
                        client = _connect_until(name, deadline)
                    elif stage.name == "guest agent answers":
                        assert client is not None
                        try:
                            _wait_guest_socket(client, deadline)
                        except Exception as exc:  # noqa: BLE001 - narrowed just below
                            if not _link_dropped(client, exc):
                                raise
                            # the link dropped (a loaded TCG guest, a tunnel): log in anew, once
                            client.close()
                            client = _connect_until(name, deadline)
                            _wait_guest_socket(client, deadline)
                        # no shares, no report to read: an exec forks a shell in the booting guest
                        for problem in _guest_share_problems(client) if state.get("shares") else ():
                            say(f"warning: {problem}")
                    elif stage.name == "host agent":
                        launcher.ensure_running(name, say, timeout=stage.timeout(accel))
                except Exception as exc:  # any failure inside a stage is reported as that stage's failure
                    failed = StageProgress(i, len(stages), stage.name, "failed", time.monotonic() - started)
                    say(failed)
                    raise StageFailed(failed, exc, stage.hint.replace("NAME", name), mp.console_log) from exc
                say(StageProgress(i, len(stages), stage.name, "done", time.monotonic() - started))
            for problem in resume_work.wait(time.monotonic() + 60) if resume_work else ():
                say(f"warning: {problem}")
        finally:
            if client is not None:
                client.close()
    return get(name)


def _resume(
    name: str, cfg: cfgmod.MachineConfig, drv: Driver, accel: str, cold: bool, say: Progress, launcher: Any
) -> dict[str, Any] | None:
    """Start the VM from its saved state; None (with the one-line reason shown) when it boots cold instead."""
    # the checksum is verified while the state loads (savestate.restore)
    wanted_port = wants_engine_port(drv, name)
    meta, why = (
        (None, "")
        if cold
        else savestate.check(name, cfg.to_json(), accel, verify_data=False, engine_port=wanted_port)
    )
    if cold and savestate.describe(name):
        why = "asked for (--cold); the saved state is thrown away"
    if meta is not None and not savestate.port_free(ssh.HOST, int(meta.get("ssh_port") or 0)):
        meta, why = None, f"the SSH port {meta.get('ssh_port')} it used is taken now"
    if meta is None:
        if why:
            say(f"cold boot: {why}")
        savestate.discard(name)
        _stop_host_agent(name)  # one parked by the saving stop knows the old boot's shares: a fresh one
        return None
    say("resuming from the saved state")
    store.write_json(
        paths.machine(name).state,
        {
            "ssh_port": meta["ssh_port"],
            "accelerator": accel,
            "started": time.time(),
            "resumed": time.time(),
            "share_transport": meta.get("share_transport"),
            "shares": meta.get("started_shares") or [],
            "settings": started_settings(cfg),  # a resume is of this config's VM only
            "engine_port": bool(meta.get("engine_port")),  # the restored VM's devices are the saved one's
        },
    )
    try:
        drv.cleanup(name)
        devices = savestate.share_devices(meta.get("shares") or [])
        had_port = bool(meta.get("engine_port"))
        if had_port:
            paths.machine(name).engine_port.unlink(missing_ok=True)
        spec = vm_spec(cfg, int(meta["ssh_port"]), accel, tuple(devices), had_port)
        savestate.restore(name, drv, spec, meta, qemu_account(cfg, spec))
        # Only now: QEMU's forwarded SSH port listens while the state loads, and a connection accepted then
        # is lost with the restored network state: the agent waited out its banner timeout (~7 s) for it.
        if launcher is not None:
            launcher.start_early(name)
    except Exception as exc:  # noqa: BLE001 - any failure to resume is a cold boot, never a dead machine
        if isinstance(exc, savestate.Damaged):
            say(f"cold boot: {exc.message}")
        else:
            say(f"cold boot: resuming failed: {exc.message if isinstance(exc, PymachineError) else exc}")
        drv.force_stop(name)
        drv.cleanup(name)
        shares.stop_daemons(name)
        _stop_host_agent(name)
        return None
    return meta


def _console_panic(console: os.PathLike[str]) -> str:
    """' (the guest kernel panicked: <line>)' when the console log says so, else ''."""
    try:
        with open(console, "rb") as fh:
            text = fh.read()[-200_000:].decode(errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        if "Kernel panic" in line:
            return f" (the guest kernel panicked: {line.split('] ', 1)[-1].strip()})"
    return ""


def _connect_until(name: str, deadline: float):  # type: ignore[no-untyped-def]
    """Log in, retrying while sshd is still coming up; a wrong host key is final, never retried."""
    last: PymachineError | None = None
    while time.monotonic() < deadline:
        try:
            return ssh.connect(name, timeout=max(5.0, min(60.0, deadline - time.monotonic())))
        except PymachineError as exc:
            if "not the pinned one" in exc.message:
                raise
            last = exc
            time.sleep(1)
    raise last or PymachineError("timed out")


def _link_dropped(client, exc: BaseException) -> bool:  # type: ignore[no-untyped-def]
    """Whether `exc` means the SSH session itself ended: paramiko says so as EOFError, or as an SSHException
    wrapping it when a channel was being opened (seen under load: 'SSH session ended … EOFError()')."""
    import paramiko

    if isinstance(exc, EOFError):
        return True
    transport = client.get_transport()
    return isinstance(exc, paramiko.SSHException) and (transport is None or not transport.is_active())


def _wait_guest_socket(client, deadline: float) -> None:  # type: ignore[no-untyped-def]
    """Until the guest agent listens: a direct-streamlocal channel to its socket opens (sshd's connect(2),
    no process in the guest: an exec of `test -S` forked a shell, under TCG ~0.1-0.3 s of guest CPU that the
    booting agent needed)."""
    from .hostagent import streamlocal

    transport = client.get_transport()
    direct = transport is not None and streamlocal.supported(transport)
    if direct:  # paramiko logs each refused channel as an ERROR: here they are expected, not said
        channel = transport.get_log_channel()
        logging.getLogger(f"{channel}.probe").setLevel(logging.CRITICAL)
        transport.set_log_channel(f"{channel}.probe")
    try:
        _poll_guest_socket(client, transport, direct, deadline)
    finally:
        if direct:
            transport.set_log_channel(channel)


def _poll_guest_socket(client, transport, direct: bool, deadline: float) -> None:  # type: ignore[no-untyped-def]
    import paramiko

    from .hostagent import streamlocal

    while True:
        if direct:
            try:
                streamlocal.open_direct(transport, GUEST_SOCKET, timeout=30).close()
                return
            except paramiko.SSHException:  # refused: nothing listens there yet
                if not transport.is_active():
                    raise
        else:
            status, _, _ = ssh.exec_command(client, f"test -S {GUEST_SOCKET}", timeout=30)
            if status == 0:
                return
        if time.monotonic() >= deadline:
            raise PymachineError(f"the guest agent does not listen on {GUEST_SOCKET} in the guest")
        time.sleep(0.1)


def _guest_share_problems(client) -> list[str]:  # type: ignore[no-untyped-def]
    """Shares the guest init could not mount (it records each in /run/pymachine/shares.json). The guest
    agent serves that report (`GET /pymachine/v1/shares`): one request on the socket `start` has just reached,
    where a `cat` over an exec forked a shell in the booting guest (~0.15-0.2 s of an idle TCG guest's time,
    more while it boots). An agent without it (older than this host's): the `cat`."""
    entries = _agent_share_report(client)
    if entries is None:
        status, out, _ = ssh.exec_command(client, "cat /run/pymachine/shares.json 2>/dev/null", timeout=30)
        import json

        try:
            entries = json.loads(out) if status == 0 and out.strip() else []
        except ValueError:
            return ["the guest's share report is unreadable"]
    return [
        f"share {e.get('path')} is not mounted in the VM: {e.get('error')}"
        for e in entries
        if isinstance(e, dict) and e.get("error")
    ]


def _agent_share_report(client) -> list[Any] | None:  # type: ignore[no-untyped-def]
    """The init's share report as the guest agent gives it ([] when the init wrote none); None when this
    agent does not say (or the socket cannot be asked)."""
    import paramiko

    from .hostagent import guestapi, streamlocal

    transport = client.get_transport()
    if transport is None or not streamlocal.supported(transport):
        return None
    try:
        chan = streamlocal.open_direct(transport, GUEST_SOCKET, timeout=30)
        status, body = guestapi.request(chan, "GET", guestapi.API + "/shares")
    except (paramiko.SSHException, OSError, guestapi.GuestApiError):
        return None
    if status != 200 or not isinstance(body, dict) or "report" not in body:
        return None
    report = body["report"]
    return report if isinstance(report, list) else []


def stop(
    name: str, progress: Progress | None = None, timeout: float | None = None, shutdown: bool = False
) -> Machine:
    """Save the machine's state (the next start resumes it), or with `shutdown` (or when saving is not
    possible: the reason is shown) power it off: graceful (the ACPI button where the driver can and the
    guest's poweroff over SSH, at once), forced after `timeout`."""
    say = progress or (lambda _m: None)
    cfg = load_config(name)
    drv = driver_for(cfg)
    accel = (store.read_json(paths.machine(name).state, {}) or {}).get("accelerator", "tcg")
    timeout = STOP_TIMEOUT.get(accel, 60.0) if timeout is None else timeout
    with _locked(name):
        if drv.capabilities.existing_host:  # never the host itself: its containers, then the agent
            _stop_host_agent(name)
            from . import remote_host

            if drv.state(name) is DriverState.RUNNING:
                remote_host.stop(name, say)
            return get(name)
        saved = False
        if shutdown:
            savestate.discard(name)  # a saved machine shut down for good: its next start boots cold
        if drv.state(name) is DriverState.RUNNING and not shutdown:
            try:
                say(f"saving machine '{name}'")
                if drv.paused(name):  # the resource saver froze it: the guest must run to flush and unmount
                    drv.unpause(name)
                started = store.read_json(paths.machine(name).state, {}) or {}
                account = lambda: qemu_account(cfg, vm_spec(cfg, int(started["ssh_port"]), accel))  # noqa: E731
                savestate.save(name, drv, cfg.to_json(), started, say, _agent_quiesce(name), account)
                saved = True
            except (PymachineError, OSError) as exc:  # a stop stops: a save that cannot be made is a shutdown
                say(f"shutting down instead: {exc.message if isinstance(exc, PymachineError) else exc}")
        if not saved:  # also when QEMU died under it: an agent must not outlive its VM's run
            _stop_host_agent(name)
        # Saved: the host agent stays, parked (hostagent/parking.py), and the resume only reconnects it.
        if drv.state(name) is DriverState.RUNNING:
            say(f"stopping machine '{name}'")
            deadline = time.monotonic() + timeout
            power_off(name, drv, deadline)
            if drv.state(name) is DriverState.RUNNING:
                say(f"machine '{name}' did not power off within {timeout:.0f} s: forcing it off")
                drv.force_stop(name)
        drv.cleanup(name)
        shares.stop_daemons(name)  # each exits with QEMU's connection already; this ends a wedged one
    return get(name)


def restart(name: str, progress: Progress | None = None) -> Machine:
    stop(name, progress, shutdown=True)  # a restart is a fresh boot (it applies pending share changes)
    return start(name, progress)


def wake(name: str, reason: str = "wake") -> None:
    """Resume a machine the resource saver paused (hostagent/idle.py) before reaching its guest other than
    through the host agent's sockets (SSH): through the agent, so it knows; through the driver when no agent
    answers (one that died while the machine slept). A no-op for a machine that runs or is stopped."""
    launcher = _host_agent_launcher()
    if launcher is not None and launcher.wake(name, reason):
        return
    try:
        drv = driver_for(load_config(name))
        if drv.paused(name):
            drv.unpause(name)
    except (PymachineError, NotImplementedError, OSError) as exc:
        log.debug("wake of %s: %s", name, exc)


def _host_agent_launcher():  # type: ignore[no-untyped-def]
    try:
        from .hostagent import launcher
    except ImportError:
        return None
    return launcher


def _agent_quiesce(name: str) -> savestate.GuestQuiesce | None:
    """The save's quiesce through the host agent, which then parks (hostagent/parking.py)."""
    launcher = _host_agent_launcher()
    if launcher is None:
        return None
    return lambda script, devs: launcher.park(name, script, shares=[d.guest() for d in devs])


def _agent_run(name: str) -> savestate.GuestScript | None:
    """Run a script in the guest over the host agent's link (after a resume: its shares' remount)."""
    launcher = _host_agent_launcher()
    return None if launcher is None else lambda script: launcher.run_in_guest(name, script)


def _agent_remount(name: str) -> savestate.GuestRemount | None:
    """The guest agent mounts a resume's device shares again, asked over the host agent's link."""
    launcher = _host_agent_launcher()
    if launcher is None:
        return None
    return lambda devs: launcher.remount_in_guest(name, [d.guest() for d in devs])


def _stop_host_agent(name: str) -> None:
    launcher = _host_agent_launcher()
    if launcher is not None:
        launcher.stop(name)


def _remove_docker_context(name: str) -> None:
    """A deleted machine's `pymachine-NAME` context would point at a socket that no longer exists."""
    launcher = _host_agent_launcher()
    if launcher is None:
        return
    try:
        launcher.remove_docker_context(name)
    except (OSError, PymachineError) as exc:  # the machine is gone already; a stale context is only clutter
        log.warning("could not remove the docker context of %s: %s", name, exc)
