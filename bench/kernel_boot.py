"""Kernel boot benchmark: the share of a cold boot before the guest's init runs (QEMU's start, firmware,
kernel, initrd) and up to the init's `PYMACHINE_READY` (sshd started, engine modules loaded), for variants
of the firmware, the CPU topology, the NIC's option ROM and the kernel command line, alternated in one run.

Each boot is the direct-QEMU driver's own command line (`drivers.qemu.qemu_argv`) for the current image, with
a throwaway qcow2 overlay and a seed whose first tar member is a folder: the init reports it on the serial
console ("seed: ignoring 'pm-init-reached'") at its seed step, a few milliseconds after it started, which
marks the moment the init runs without any change to the image. For each mark the host's time since QEMU's
exec and QEMU's CPU seconds by then (utime + stime: steadier than the wall clock on a shared host) are kept.

    python bench/kernel_boot.py [--runs 4] [--variant NAME ...] [--append NAME=OPTIONS ...]
                                [--guest] [--dmesg FILE] [--debugcon]

`--append lpj=lpj=11999` defines a variant that adds those words to the command line (a leading `-` removes a
word: `--append loud=-quiet`); `a+b` boots with both variants' changes. `--guest` logs in after each boot
and reads the guest's own clock at its steps (dmesg, /run/pymachine-init.log): "before the kernel" is the
host's time of the init's mark less the guest's uptime then (QEMU's start, the firmware, the kernel's load
and decompression). `--dmesg FILE` logs in after the first boot of each variant and saves its
`dmesg` (add `initcall_debug` through a variant to see each initcall's time). `--debugcon` records the
firmware's debug port (0x402: SeaBIOS's log) to time the firmware's start.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.guestboot import KeyPair, free_port, make_seed, wait_for_banner  # noqa: E402

from pymachine.hostvm import accel  # noqa: E402
from pymachine.hostvm.domain import VMSpec  # noqa: E402
from pymachine.hostvm.drivers.qemu import qemu_argv  # noqa: E402
from pymachine.hostvm.image import ImageManifest, inspect_image  # noqa: E402

MARKER = "pm-init-reached"
# console text -> mark (the kernel says nothing there: `quiet`; Debian's has no verbose decompressor)
MARKS = (("init", MARKER), ("ready", "PYMACHINE_READY"))


@dataclass(frozen=True)
class Variant:
    """One way of booting: command-line words added (or removed with a leading '-') and QEMU changes."""

    name: str
    words: tuple[str, ...] = ()
    bios: str = ""  # -bios FILE instead of QEMU's default SeaBIOS
    topology: str = ""  # -smp N,<topology>
    nic_rom: bool = True  # False: the virtio NIC without its iPXE option ROM (romfile=)
    raw_initrd: bool = False  # the image's initrd uncompressed (no gunzip in the guest)
    machine: str = ""  # machine properties added with a second -machine (QEMU merges them)


BUILTIN = {
    "base": Variant("base"),
    "qboot": Variant("qboot", bios="/usr/share/qemu/qboot.rom"),
    "cores": Variant("cores", topology="sockets=1,cores={n},threads=1"),
    "norom": Variant("norom", nic_rom=False),
    "rawinitrd": Variant("rawinitrd", raw_initrd=True),
    "nosata": Variant("nosata", machine="sata=off,smbus=off"),
    "noi8042": Variant("noi8042", machine="i8042=off,vmport=off"),
}


@dataclass
class Boot:
    variant: str
    marks: dict[str, tuple[float, float]] = field(default_factory=dict)  # mark -> (seconds, QEMU CPU)
    console: list[str] = field(default_factory=list)
    guest: dict[str, float] = field(default_factory=dict)  # the guest's uptime at its own marks (--guest)


# dmesg text -> the guest's mark (its uptime then): the kernel's and the initrd's steps
GUEST_MARKS = (
    ("cpus up", "smp: Brought up"),
    ("run /init", "Run /init as init process"),
    ("switch_root", "pymachine-initrd: switch_root"),
    ("python", "pymachine-init: python started"),
)


def guest_marks(text: str) -> dict[str, float]:
    marks: dict[str, float] = {}
    for line in text.splitlines():
        for name, needle in GUEST_MARKS:
            if needle in line and line.startswith("[") and name not in marks:
                marks[name] = float(line[1:].split("]", 1)[0])
        at, _, step = line.partition(" ")
        if step in ("init", "sshd", "modules") and at.replace(".", "", 1).isdigit():
            marks[f"init: {step}"] = float(at)
    return marks


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_line(base: str, words: tuple[str, ...]) -> str:
    out = base.split()
    for word in words:
        if word.startswith("-"):
            out = [w for w in out if w != word[1:]]
        elif word not in out:
            out.append(word)
    return " ".join(out)


def argv_for(v: Variant, image: ImageManifest, work: Path, seed: Path, port: int, cpus: int) -> list[str]:
    spec = VMSpec(
        name=f"kb-{os.getpid()}",
        cpus=cpus,
        memory_mib=1024,
        kernel=str(image.kernel),
        initrd=str(work / "initrd.cpio") if v.raw_initrd else str(image.initrd),
        cmdline=command_line(image.cmdline, v.words),
        disk=str(work / "disk.qcow2"),
        seed=str(seed),
        console_log=str(work / "console.log"),
        ssh_port=port,
        accel=accel.probe().name,
    )
    argv = qemu_argv(spec, str(work / "qemu.pid"), str(work / "qmp.sock"))
    argv.remove("-daemonize")
    argv[argv.index("-serial") + 1] = "stdio"
    # one socket per vCPU (QEMU's default, what the drivers did before) unless the variant says otherwise
    argv[argv.index("-smp") + 1] = f"{cpus}," + v.topology.format(n=cpus) if v.topology else str(cpus)
    if not v.nic_rom:
        i = argv.index(spec.nic())
        argv[i] += ",romfile="
    if v.bios:
        argv += ["-bios", v.bios]
    if v.machine:
        argv += ["-machine", v.machine]
    return argv


def boot(
    v: Variant, image: ImageManifest, cpus: int, dmesg: Path | None, debugcon: bool, guest: bool
) -> Boot:
    work = Path(tempfile.mkdtemp(prefix="kb-", dir="/var/tmp"))
    result = Boot(v.name)
    try:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.disk),
             str(work / "disk.qcow2")],
            check=True,
        )  # fmt: skip
        if v.raw_initrd:
            (work / "initrd.cpio").write_bytes(gzip.decompress(image.initrd.read_bytes()))
        client, host = KeyPair.generate("kb"), KeyPair.generate("kb-host")
        seed = seed_with_marker(work / "seed.tar", client, host)
        port = free_port()
        argv = argv_for(v, image, work, seed, port, cpus)
        if debugcon:
            argv += ["-chardev", f"file,id=dbg,path={work / 'debugcon.log'}",
                     "-device", "isa-debugcon,iobase=0x402,chardev=dbg"]  # fmt: skip
        t0 = time.monotonic()
        with open(work / "qemu.log", "wb") as errors:
            qemu = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors)
        done = threading.Event()

        def mark(name: str) -> None:
            result.marks.setdefault(name, (time.monotonic() - t0, cpu_seconds(qemu.pid)))

        def read_console() -> None:
            # raw chunks, not lines: the decompressor's "Decompressing Linux... " ends its line only when done
            assert qemu.stdout is not None
            seen = ""
            while chunk := os.read(qemu.stdout.fileno(), 65536):
                seen += chunk.decode(errors="replace")
                for mark_name, text in MARKS:
                    if mark_name not in result.marks and text in seen:
                        mark(mark_name)
                if "ready" in result.marks:
                    break
            result.console.extend(seen.splitlines())
            done.set()

        def watch_firmware() -> None:
            log = work / "debugcon.log"
            while not done.is_set():
                if log.exists() and log.stat().st_size:
                    mark("firmware")
                    return
                time.sleep(0.002)

        threading.Thread(target=read_console, daemon=True).start()
        if debugcon:
            threading.Thread(target=watch_firmware, daemon=True).start()
        if not done.wait(300) or "ready" not in result.marks:
            raise RuntimeError(f"{v.name}: no PYMACHINE_READY; console:\n" + "\n".join(result.console[-40:]))
        if dmesg is not None or guest:
            wait_for_banner(port, qemu, 120, work / "console.log")
            text = guest_dmesg(port, client, host)
            if dmesg is not None:
                dmesg.write_text(text)
            result.guest = guest_marks(text)
            if "init: init" in result.guest and "init" in result.marks:
                # QEMU's start, the firmware, loading and decompressing the kernel: the host's time of the
                # init's console mark less the guest's uptime at that step (the kernel's clock starts after)
                result.guest["before the kernel"] = result.marks["init"][0] - result.guest["init: init"]
        qemu.kill()
        qemu.wait(30)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def seed_with_marker(path: Path, client: KeyPair, host: KeyPair) -> Path:
    """The usual seed with a folder entry first: the init names it on the console at its seed step."""
    make_seed(path, "kb", client, host)
    original = path.read_bytes()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(MARKER)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        with tarfile.open(fileobj=io.BytesIO(original)) as src:
            for member in src.getmembers():
                tar.addfile(member, src.extractfile(member))
    path.write_bytes(out.getvalue())
    return path


def guest_dmesg(port: int, client: KeyPair, host: KeyPair) -> str:
    import base64

    import paramiko

    ssh = paramiko.SSHClient()
    key_type, key_b64 = host.public_line.split()[:2]
    ssh.get_host_keys().add(
        f"[127.0.0.1]:{port}", key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    )
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect("127.0.0.1", port=port, username="root", pkey=client.paramiko_key(), allow_agent=False,
                look_for_keys=False, timeout=60, banner_timeout=120, auth_timeout=120)  # fmt: skip
    try:
        _, out, _ = ssh.exec_command("dmesg; echo; cat /run/pymachine-init.log; grep -h . /proc/cmdline")
        return out.read().decode(errors="replace")
    finally:
        ssh.close()


def combine(name: str, variants: dict[str, Variant]) -> Variant:
    """`cores+norom`: the variants' changes together."""
    out = Variant(name)
    for part in name.split("+"):
        v = variants[part]
        out = replace(
            out,
            words=out.words + v.words,
            bios=out.bios or v.bios,
            topology=out.topology or v.topology,
            nic_rom=out.nic_rom and v.nic_rom,
            raw_initrd=out.raw_initrd or v.raw_initrd,
            machine=",".join(m for m in (out.machine, v.machine) if m),
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument(
        "--variant", action="append", default=[], help="a builtin or --append's name; a+b combines"
    )
    ap.add_argument("--append", action="append", default=[], help="NAME=WORDS: a command-line variant")
    ap.add_argument("--dmesg", type=Path, help="save each variant's first dmesg as FILE.<variant>")
    ap.add_argument("--guest", action="store_true", help="log in after each boot for the guest's own marks")
    ap.add_argument("--debugcon", action="store_true", help="time the firmware's start (its debug port)")
    args = ap.parse_args()
    image = inspect_image()
    if image is None:
        print("no image for the current recipe: build it first (pymachine image build)")
        return 1
    variants = dict(BUILTIN)
    for item in args.append:
        name, _, words = item.partition("=")
        variants[name] = Variant(name, tuple(words.split()))
    chosen = [combine(n, variants) for n in (args.variant or ["base"])]
    boots: list[Boot] = []
    for i in range(args.runs):
        order = chosen[i % len(chosen) :] + chosen[: i % len(chosen)]  # who goes first alternates
        for v in order:
            dm = None
            if args.dmesg and i == 0:
                dm = args.dmesg.with_name(f"{args.dmesg.name}.{v.name}")
            b = boot(v, image, args.cpus, dm, args.debugcon, args.guest)
            boots.append(b)
            marks = ", ".join(f"{k} {s:.2f} s (CPU {c:.2f})" for k, (s, c) in b.marks.items())
            if b.guest:
                marks += "; guest: " + ", ".join(f"{k} {t:.2f}" for k, t in b.guest.items())
            print(f"run {i + 1} {v.name}: {marks} (load {os.getloadavg()[0]:.1f})", flush=True)
            if dm is not None:
                dm.with_suffix(".console").write_text("\n".join(b.console) + "\n")
    print(f"\nmedians over {args.runs} runs, load {os.getloadavg()[0]:.1f}:")
    med = statistics.median
    for v in chosen:
        mine = [b for b in boots if b.variant == v.name]
        parts = []
        for mark in ("firmware", "init", "ready"):
            got = [b.marks[mark] for b in mine if mark in b.marks]
            if got:
                parts.append(
                    f"{mark} {med(s for s, _ in got):.2f} s (CPU {med(c for _, c in got):.2f}, "
                    f"{min(s for s, _ in got):.2f}-{max(s for s, _ in got):.2f})"
                )
        print(f"  {v.name:10} " + "; ".join(parts))
        for mark, _ in (("before the kernel", ""), *GUEST_MARKS, ("init: init", ""), ("init: sshd", ""),
                        ("init: modules", "")):  # fmt: skip
            got = [b.guest[mark] for b in mine if mark in b.guest]
            if got:
                print(f"  {'':10} guest {mark}: {med(got):.2f} s ({min(got):.2f}-{max(got):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
