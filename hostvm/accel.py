"""Which hardware accelerator really works here: KVM, HVF (macOS), WHPX (Windows), or QEMU's TCG.

`probe()` gathers facts about the host, `decide()` (a pure function of those facts) picks the accelerator and
a one-line reason a person can read, and the answer is cached per host in `paths.accel_cache_file()`, keyed by
kernel release and QEMU version. `/dev/kvm` existing is not enough: on hosts whose KVM is the nested `kvm_pvm`
module (no vmx/svm in the CPU flags) a stock Debian kernel dies under it, so TCG is chosen there.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths

QEMU = "qemu-system-x86_64"
TCG_ARGS = ("-accel", "tcg,thread=multi,tb-size=64", "-cpu", "max")
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_CREATE_VM = 0xAE01  # _IO(KVMIO, 0x01)
KVM_API_VERSION = 12


@dataclass(frozen=True)
class Accel:
    name: str  # kvm | hvf | whpx | tcg
    reason: str
    qemu_args: tuple[str, ...]
    domain_type: str  # libvirt <domain type=...>: kvm, hvf, or qemu (TCG, also used for WHPX)

    def describe(self) -> str:
        """The one line the user sees."""
        return f"accelerator: {self.name} ({self.reason})"

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["qemu_args"] = list(self.qemu_args)
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Accel:
        return cls(
            name=str(data["name"]),
            reason=str(data["reason"]),
            qemu_args=tuple(str(a) for a in data["qemu_args"]),  # type: ignore[union-attr]
            domain_type=str(data["domain_type"]),
        )


@dataclass(frozen=True)
class HostFacts:
    """Everything `decide()` looks at; gathered by `gather_facts()`, written by hand in tests."""

    system: str  # linux | darwin | win32
    qemu_accels: tuple[str, ...] = ()  # from `qemu-system-x86_64 -accel help`
    kvm_device: bool = False
    kvm_access: bool = False
    kvm_modules: tuple[str, ...] = ()  # loaded among kvm_intel, kvm_amd, kvm_pvm
    cpu_virt_flags: tuple[str, ...] = ()  # vmx / svm in /proc/cpuinfo
    kvm_api_ok: bool | None = None  # KVM_GET_API_VERSION + KVM_CREATE_VM worked (None: not tried)
    kvm_error: str = ""
    hvf_supported: bool = False  # sysctl kern.hv_support
    forced: str = ""  # PYMACHINE_ACCEL
    extra: dict[str, str] = field(default_factory=dict)


def _tcg(reason: str) -> Accel:
    return Accel("tcg", reason, TCG_ARGS, "qemu")


def decide(facts: HostFacts) -> Accel:
    """Pick the accelerator from the facts. Pure: no I/O."""
    if facts.forced:
        forced = facts.forced.lower()
        if forced == "tcg":
            return _tcg("forced by PYMACHINE_ACCEL=tcg")
        if forced == "kvm":
            return Accel("kvm", "forced by PYMACHINE_ACCEL=kvm", ("-accel", "kvm", "-cpu", "host"), "kvm")
        if forced == "hvf":
            return Accel("hvf", "forced by PYMACHINE_ACCEL=hvf", ("-accel", "hvf", "-cpu", "host"), "hvf")
        if forced == "whpx":
            return Accel("whpx", "forced by PYMACHINE_ACCEL=whpx", ("-accel", "whpx", "-cpu", "max"), "qemu")
    if facts.system == "darwin":
        if facts.hvf_supported and "hvf" in facts.qemu_accels:
            return Accel("hvf", "Hypervisor.framework is available", ("-accel", "hvf", "-cpu", "host"), "hvf")
        why = "this QEMU lacks HVF" if facts.hvf_supported else "Hypervisor.framework is not supported"
        return _tcg(f"{why}; using software emulation (slow)")
    if facts.system == "win32":
        if "whpx" in facts.qemu_accels:
            return Accel(
                "whpx", "Windows Hypervisor Platform is available", ("-accel", "whpx", "-cpu", "max"), "qemu"
            )
        return _tcg("Windows Hypervisor Platform is not enabled; using software emulation (slow)")
    return _decide_linux(facts)


def _decide_linux(facts: HostFacts) -> Accel:
    if not facts.kvm_device:
        return _tcg(
            "no /dev/kvm on this host (no hardware virtualization or KVM not loaded); software emulation"
        )
    if facts.qemu_accels and "kvm" not in facts.qemu_accels:
        return _tcg("this QEMU was built without KVM; software emulation")
    if "kvm_pvm" in facts.kvm_modules:
        return _tcg(
            "/dev/kvm is the nested kvm_pvm module, which cannot boot a stock Debian kernel; "
            "software emulation"
        )
    if not facts.cpu_virt_flags:
        return _tcg(
            "/dev/kvm exists but the CPU shows no vmx/svm (nested or paravirtual KVM cannot boot a stock "
            "kernel); software emulation"
        )
    if not facts.kvm_access:
        return _tcg("/dev/kvm is not accessible to this user (join the 'kvm' group); software emulation")
    if facts.kvm_api_ok is False:
        return _tcg(f"KVM ioctls fail on /dev/kvm ({facts.kvm_error or 'unknown error'}); software emulation")
    flag = facts.cpu_virt_flags[0]
    return Accel("kvm", f"/dev/kvm works ({flag}, {'/'.join(facts.kvm_modules) or 'kvm'})",
                 ("-accel", "kvm", "-cpu", "host"), "kvm")  # fmt: skip


def _qemu_accels() -> tuple[str, ...]:
    if not shutil.which(QEMU):
        return ()
    try:
        out = subprocess.run([QEMU, "-accel", "help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(ln.strip() for ln in out.splitlines()[1:] if ln.strip())


def _kvm_ioctls() -> tuple[bool, str]:
    import fcntl  # Linux only, like /dev/kvm

    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"open: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            return False, f"KVM API version {version}, expected {KVM_API_VERSION}"
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm_fd)
        return True, ""
    except OSError as exc:
        return False, f"ioctl: {exc.strerror}"
    finally:
        os.close(fd)


def gather_facts() -> HostFacts:
    system = "darwin" if sys.platform == "darwin" else "win32" if sys.platform == "win32" else "linux"
    forced = os.environ.get("PYMACHINE_ACCEL", "")
    accels = _qemu_accels()
    if system == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "kern.hv_support"], capture_output=True, text=True).stdout
        except OSError:
            out = ""
        return HostFacts(system, accels, hvf_supported=out.strip() == "1", forced=forced)
    if system == "win32":
        return HostFacts(system, accels, forced=forced)
    device = os.path.exists("/dev/kvm")
    modules = tuple(m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if os.path.isdir(f"/sys/module/{m}"))
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(" ".join(ln for ln in fh if ln.startswith("flags")).split())
    except OSError:
        flags = set()
    access = device and os.access("/dev/kvm", os.R_OK | os.W_OK)
    api_ok, error = _kvm_ioctls() if access else (None, "")
    return HostFacts(
        system, accels, device, access, modules, tuple(f for f in ("vmx", "svm") if f in flags),
        api_ok, error, forced=forced,
    )  # fmt: skip


def _cache_key() -> str:
    qemu = ""
    if shutil.which(QEMU):
        try:
            qemu = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            pass
    first = qemu.splitlines()[0] if qemu else "no-qemu"
    uid = os.geteuid() if hasattr(os, "geteuid") else 0
    return f"{platform.system()} {platform.release()} | {first} | uid {uid}"


def probe(refresh: bool = False) -> Accel:
    """The accelerator for this host (cached; `refresh=True` probes again). PYMACHINE_ACCEL forces one."""
    forced = os.environ.get("PYMACHINE_ACCEL", "")
    if forced:
        return decide(
            HostFacts(sys.platform if sys.platform in ("darwin", "win32") else "linux", forced=forced)
        )
    cache: Path = paths.accel_cache_file()
    key = _cache_key()
    if not refresh and cache.exists():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return Accel.from_json(data["accel"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a broken cache is just re-probed
    facts = gather_facts()
    accel = decide(facts)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        record = {"key": key, "accel": accel.to_json(), "facts": asdict(facts)}
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, cache)
    except OSError:
        pass  # caching is an optimisation; the answer stands
    return accel
