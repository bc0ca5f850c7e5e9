"""pymachine guest init, run by /sbin/pymachine-init as PID 1; no systemd (contract: docs/contracts.md §2).

Sets the machine up (mounts, cgroup2 controllers, the seed on /dev/vdb, hostname, SSH keys, static network),
starts sshd and the guest agent, loads the engine's kernel modules once the agent answers, supervises the
agent (respawn with back-off), reaps every orphan, and powers off on SIGTERM/SIGPWR or the ACPI power button
(libvirt's graceful shutdown).

Written in Python rather than sh because under TCG every fork+exec of a dynamically linked tool costs
~0.1-0.3 s of guest time: here files, the hostname and the network are syscalls, and only sshd, modprobe and
resize2fs are exec'd. Standard library only. An exception must never escape (PID 1 dying panics the kernel).

Boot speed: every module imported before sshd costs guest time under TCG, so this file only imports modules
that Debian's python3.11 has built in (`_signal`, `_struct`, `_socket`, `fcntl`, `select`, `time`; not
`signal`, whose enum import alone is ~0.5 s, nor `ctypes`, only needed when the initrd did not mount the API
filesystems). See docs/images.md "Boot timeline".
"""

from __future__ import annotations

import _signal as signal
import _socket
import _struct
import fcntl
import os
import select
import time

AGENT_DIR = "/opt/pymachine/agent"
AGENT_LOG = "/var/log/pymachine-agent.log"
# -S: no `site` (its .pth scan costs ~0.5 s under TCG); PYTHONPATH (Agent.env) finds the agent
AGENT_ARGV = ["/usr/bin/python3", "-S", "-m", "pymachine_agent", "serve", "--log-file", AGENT_LOG]  # rotates
POWEROFF = "/sbin/pymachine-poweroff"
SEED_DISK, SEED_DIR = "/dev/vdb", "/run/seed"
# virtio_balloon: with free page reporting (CONFIG_PAGE_REPORTING=y in Debian's cloud kernel) the guest hands
# pages it frees back to the host; without udev nothing would load it. The nft_* ones are what the agent's
# ruleset uses (nat chains, fib, masquerade, ct, dnat; ctnetlink to forget flows): left to autoload, each
# missing one aborted the agent's `nft -f` transaction, which nftables replays after a modprobe of its own,
# 21 modprobe execs at every boot (the agent's start took 1.6-2.3 s more at low load, 13 s at load 11).
# virtio_console: the engine socket's virtio-serial port (/dev/vportNpM), which the agent opens once it is in.
# No udev: anything else autoloads through modprobe; fuse would too, but without udev or static nodes
# /dev/fuse only appears once the module is in, and `--device /dev/fuse` needs the node.
ENGINE_MODULES = ["overlay", "veth", "bridge", "br_netfilter", "nf_tables", "nft_chain_nat", "nft_fib_ipv4",
                  "nft_masq", "nft_ct", "nft_nat", "nf_conntrack_netlink", "button", "evdev", "fuse",
                  "virtio_balloon", "virtio_console"]  # fmt: skip
CONTROLLERS = ["cpuset", "cpu", "io", "memory", "pids"]
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What every program the init starts gets (tool_env() adds OPENSSL_ia32cap under TCG)
TOOL_ENV = {"PATH": PATH, "LANG": "C.UTF-8"}
# Under QEMU's TCG (hosts without KVM) `-cpu max` reports AVX2, BMI and SSSE3, OpenSSL picks its vector code
# by CPUID, and TCG emulates those instructions several times more slowly than the integer code it translates.
# The mask makes OpenSSL (sshd's ciphers and MACs, the agent's sha256 through hashlib) take its integer code.
# The first word is CPUID.1 EDX:ECX (clear SSSE3, bit 32+9, and AVX, 32+28), the second CPUID.(EAX=7).EBX
# (clear BMI1, bit 3, AVX2, 5, and BMI2, 8). In a TCG guest: sha256 0.58 s per 20 MiB against 1.34-1.74 s,
# sshd's bulk rate 1.3-1.7x (docs/hostagent.md, run 15). Never set on KVM, where the host's model name shows.
TCG_MODEL = "QEMU TCG CPU"
OPENSSL_TCG_MASK = "~0x1000020000000000:~0x128"
EV_KEY, KEY_POWER = 1, 116
INPUT_EVENT = _struct.Struct("llHHi")  # struct input_event on 64-bit: timeval, type, code, value
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
SHARE_MODULES = {"virtiofs": ["virtiofs"], "9p": ["9p", "9pnet_virtio"]}
# A FUSE mount starts with the default 128 KiB readahead, so a sequential read of a shared file is one 128 KiB
# FUSE READ after another (2,048 for 256 MiB), each a round trip through QEMU and virtiofsd; 4 MiB makes them
# 1 MiB READs (virtiofsd's max_pages is 256) with several in flight. Measured under load on the 2-core TCG
# host: 0.36x native at 128 KiB, 0.56x at 1 MiB, 0.99x at 4 MiB (docs/machines.md, "virtiofs speed").
VIRTIOFS_READAHEAD_KB = 4096
SHARE_REPORT = "/run/pymachine/shares.json"
MODULES_STATUS = "/run/pymachine/modules.json"  # written once ENGINE_MODULES are loaded (class Modules)

_timeline: list[str] = []


def say(message: str) -> None:
    os.write(1, f"pymachine-init: {message}\n".encode())


def mark(step: str) -> None:
    """A boot timeline (guest uptime per step), written to /run/pymachine-init.log (`write_timeline`)."""
    _timeline.append(f"{time.clock_gettime(time.CLOCK_BOOTTIME):.2f} {step}\n")


def write_timeline() -> None:
    with open("/run/pymachine-init.log", "w") as fh:
        fh.writelines(_timeline)


def step(func):  # type: ignore[no-untyped-def]
    """Run one setup step; a failure is reported on the console and the boot goes on."""

    def run(*args):  # type: ignore[no-untyped-def]
        try:
            func(*args)
        except Exception:  # noqa: BLE001 - PID 1 must survive anything
            say(f"{func.__name__} failed:\n{_traceback()}")
        mark(func.__name__)

    return run


def _traceback() -> str:
    import traceback  # only on failure: every import costs boot time under TCG

    return traceback.format_exc()


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    import ctypes  # only when the initrd did not mount this (it mounts them all): ~1 s of boot under TCG

    _libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs(target, exist_ok=True)
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        if err != 16:  # EBUSY: already mounted
            raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def write(path: str, content: str | bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)


def echo(path: str, text: str) -> None:
    """Write a kernel setting (/proc, /sys): no create, no chmod."""
    with open(path, "w") as fh:
        fh.write(text)


def under_tcg(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's text names QEMU's TCG CPU (its first "model name" line)."""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return TCG_MODEL in line
    return False


def tool_env(cpuinfo: str = "/proc/cpuinfo") -> None:
    """OpenSSL's integer code for everything started from here when the CPU is QEMU's TCG (see TCG_MODEL)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            tcg = under_tcg(f.read(4096))
    except OSError:
        return
    if tcg:  # seen in /proc/<sshd or agent>/environ
        TOOL_ENV["OPENSSL_ia32cap"] = OPENSSL_TCG_MASK


def spawn(argv: list[str], log_path: str | None = None, env: dict[str, str] | None = None) -> int:
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    if log_path:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        actions += [(os.POSIX_SPAWN_OPEN, 1, log_path, flags, 0o644), (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawn(argv[0], argv, env or TOOL_ENV, file_actions=actions,
                          setsid=True)  # fmt: skip


def run(argv: list[str], stdin: bytes = b"") -> int:
    """Run a tool to completion (its output goes to the console)."""
    r, w = os.pipe()
    pid = os.posix_spawn(argv[0], argv, TOOL_ENV,
                         file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_CLOSE, w)])  # fmt: skip
    os.close(r)
    os.write(w, stdin)
    os.close(w)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def mounted() -> set[str]:
    try:
        with open("/proc/mounts") as fh:
            return {line.split()[1] for line in fh}
    except OSError:  # no /proc yet
        return set()


@step
def filesystems() -> None:
    # Our initrd mounts all of these (images/guest/initrd/init); mount what is missing (another initrd).
    wanted = [
        ("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
        ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
        ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
        ("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"),
        ("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, ""),
        ("run", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"),
        ("tmp", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "nsdelegate"),
    ]
    for source, target, fstype, flags, data in wanted:
        if target not in mounted():
            mount(source, target, fstype, flags, data)
    for controller in CONTROLLERS:
        try:
            echo("/sys/fs/cgroup/cgroup.subtree_control", f"+{controller}\n")
        except OSError:
            say(f"cgroup controller {controller} is unavailable")
    for link, target in (("/dev/fd", "/proc/self/fd"), ("/dev/ptmx", "pts/ptmx")):
        if not os.path.lexists(link):
            os.symlink(target, link)
    for folder in ("/run/lock", "/run/sshd", "/run/pymachine", "/var/log"):
        os.makedirs(folder, exist_ok=True)


@step
def seed() -> None:
    os.makedirs(SEED_DIR, mode=0o700, exist_ok=True)
    if not os.path.exists(SEED_DISK):
        say(f"no seed disk ({SEED_DISK}): no hostname, keys or agent settings")
        return
    with open(SEED_DISK, "rb") as disk:
        for name, data in read_flat_tar(disk):
            write(f"{SEED_DIR}/{name}", data, 0o600)


def read_flat_tar(fh) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    """The plain top-level files of a ustar/pax/gnu tar; everything else is skipped and reported.
    (tarfile's import chain costs seconds under TCG, and Debian's 3.11.2 has no extraction filters.)"""
    files: list[tuple[str, bytes]] = []
    while True:
        header = fh.read(512)
        if len(header) < 512 or header == bytes(512):
            return files
        name = header[0:100].split(b"\0", 1)[0].decode(errors="replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode(errors="replace")
        if header[257:262] == b"ustar" and prefix:
            name = f"{prefix}/{name}"
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        kind = header[156:157]
        data = fh.read(size)
        fh.read(-size % 512)
        name = name.removeprefix("./")
        if kind in (b"0", b"\0") and name and "/" not in name and not name.startswith("."):
            files.append((name, data))
        elif kind not in (b"x", b"g"):  # pax headers carry metadata only
            say(f"seed: ignoring {name!r}")


def _seed_file(name: str) -> bytes | None:
    try:
        with open(f"{SEED_DIR}/{name}", "rb") as fh:
            return fh.read() or None
    except OSError:
        return None


@step
def identity() -> None:
    name = (_seed_file("hostname") or b"pymachine").decode().strip().splitlines()[0]
    echo("/proc/sys/kernel/hostname", name)
    write("/etc/hostname", name + "\n")
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    write("/etc/hosts", hosts)
    # sshd_config reads keys from /etc/ssh/authorized_keys/%u: /root may be a shared host folder
    os.makedirs("/etc/ssh/authorized_keys", mode=0o755, exist_ok=True)
    keys = _seed_file("authorized_keys")
    if keys:
        write("/etc/ssh/authorized_keys/root", keys, 0o600)
    host_key = _seed_file("ssh_host_ed25519_key")
    key_path = "/etc/ssh/ssh_host_ed25519_key"
    if host_key:
        write(key_path, host_key, 0o600)
        public = _seed_file("ssh_host_ed25519_key.pub")
        if public:
            write(key_path + ".pub", public)
    else:
        # The host cannot pin this key; it only keeps sshd usable for debugging an unseeded boot.
        say("WARNING: no seeded host key, generating a random one")
        for path in (key_path, key_path + ".pub"):
            if os.path.exists(path):
                os.unlink(path)
        run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key_path])


@step
def network() -> None:
    # QEMU user networking (slirp): fixed addresses, see docs/contracts.md §2. The initrd loaded virtio_net.
    for _ in range(200):
        if os.path.exists("/sys/class/net/eth0"):
            break
        time.sleep(0.01)
    try:
        configure_network()
    except OSError as exc:  # the ioctls are the fast path; `ip` is the well-trodden one
        say(f"network ioctls failed ({exc}); using ip")
        script = b"link set lo up\nlink set eth0 up\naddr add 10.0.2.15/24 dev eth0\n"
        script += b"route add default via 10.0.2.2\n"
        if run(["/usr/sbin/ip", "-batch", "-"], script) != 0:
            say("network setup failed")
    write("/etc/resolv.conf", "nameserver 10.0.2.3\n")
    echo("/proc/sys/net/ipv4/ip_forward", "1\n")


SIOCADDRT, SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK = 0x890B, 0x8913, 0x8914, 0x8916, 0x891C
IFF_UP, RTF_UP, RTF_GATEWAY = 0x1, 0x1, 0x2
RTENTRY = _struct.Struct("@L16s16s16sHhLPhPLLH6x")  # struct rtentry on x86_64 (120 bytes)


def _sockaddr_in(address: str) -> bytes:
    return _struct.pack("=H2s4s8x", _socket.AF_INET, b"", _socket.inet_aton(address))


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    return _struct.pack("16s24s", name.encode(), payload)


def configure_network() -> None:
    """lo and eth0 up, 10.0.2.15/24, default route via 10.0.2.2: the ioctls `ifconfig`/`route` use, without
    an exec of `ip` (~0.3-0.5 s under TCG)."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        fd = sock.fileno()
        fcntl.ioctl(fd, SIOCSIFADDR, _ifreq("eth0", _sockaddr_in("10.0.2.15")))
        fcntl.ioctl(fd, SIOCSIFNETMASK, _ifreq("eth0", _sockaddr_in("255.255.255.0")))
        for name in ("lo", "eth0"):
            flags = _struct.unpack_from("H", fcntl.ioctl(fd, SIOCGIFFLAGS, _ifreq(name)), 16)[0]
            fcntl.ioctl(fd, SIOCSIFFLAGS, _ifreq(name, _struct.pack("H", flags | IFF_UP)))
        any_ = _sockaddr_in("0.0.0.0")
        route = RTENTRY.pack(
            0, any_, _sockaddr_in("10.0.2.2"), any_, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0
        )
        fcntl.ioctl(fd, SIOCADDRT, route)
    finally:
        sock.close()


def _share_entries() -> list[dict]:
    raw = _seed_file("mounts.json")
    if not raw:
        return []
    import json

    return [e for e in json.loads(raw) if e.get("transport") in SHARE_MODULES]


class ShareModules:
    """The shares' modules, loaded by a `modprobe -a` spawned as soon as the seed is read, so that the exec and
    the modules' load (two signature checks) run on the other vCPU while the init brings up the identity, the
    network and sshd; `shares()` waits for it."""

    pid = 0
    names: list[str] = []

    @classmethod
    def load(cls) -> None:
        cls.names = sorted({m for e in _share_entries() for m in SHARE_MODULES[e["transport"]]})
        if cls.names:
            try:
                cls.pid = spawn(["/usr/sbin/modprobe", "-a", *cls.names], "/run/modprobe-shares.log")
            except OSError as exc:
                say(f"cannot run modprobe: {exc}")

    @classmethod
    def wait(cls) -> None:
        if not cls.pid:
            return
        pid, cls.pid = cls.pid, 0
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            say(f"cannot load {' '.join(cls.names)}: shares will fail (see /run/modprobe-shares.log)")


@step
def shares() -> None:
    """Mount each host folder (seed mounts.json) at its own path, nosuid,nodev (ro when read-only), before the
    agent starts. sshfs shares are the host agent's to mount later. Each result goes to SHARE_REPORT, which
    `pymachine start` reads: a failed share is reported, never silently an empty folder."""
    entries = _share_entries()
    if not entries:
        return
    import json

    ShareModules.wait()
    report = []
    for e in entries:
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if e.get("readonly") else 0)
        # 9p: cache=mmap so that mmap'd writes (git, databases) reach the host; msize for large reads
        data = "trans=virtio,version=9p2000.L,msize=524288,cache=mmap" if e["transport"] == "9p" else ""
        error = None
        try:
            mount(e["tag"], e["path"], e["transport"], flags, data)
        except OSError as exc:
            error = str(exc)
            say(f"share {e['path']} ({e['transport']} {e['tag']}) is not mounted: {error}")
        if error is None and e["transport"] == "virtiofs":
            try:
                readahead(e["path"], VIRTIOFS_READAHEAD_KB)
            except OSError as exc:  # slower sequential reads, nothing worse
                say(f"share {e['path']}: readahead not set: {exc}")
        report.append({"path": e["path"], "tag": e["tag"], "transport": e["transport"], "error": error})
    write(SHARE_REPORT, json.dumps(report) + "\n")


def readahead(path: str, kb: int) -> None:
    """Set the readahead of the filesystem mounted at `path` (its bdi is named after its device number)."""
    dev = os.stat(path).st_dev
    write(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", f"{kb}\n")


@step
def sshd() -> None:
    # -r: no re-exec of sshd for every connection (a second dynamic load of sshd and its libraries, a second
    # or more under TCG on a busy host, paid by the first login); the ASLR it buys matters little for a
    # key-only sshd that only the host reaches through its loopback port forward.
    if run(["/usr/sbin/sshd", "-r", "-E", "/var/log/sshd.log"]) != 0:
        say("sshd failed to start (see /var/log/sshd.log)")


class Agent:
    """The guest agent under a respawn loop: quick deaths back off up to 15 s, so a broken agent (or one
    that cannot `serve` yet) costs nothing while it keeps being retried."""

    def __init__(self) -> None:
        self.pid = 0
        self.started = 0.0
        self.delay = 1.0
        self.next_start = 0.0
        self.env = {**TOOL_ENV, "HOME": "/root", "PYTHONPATH": AGENT_DIR,
                    "PYTHONUNBUFFERED": "1", "PYMACHINE_SEED": SEED_DIR, "PYMACHINE_MODULES": MODULES_STATUS,
                    "TMPDIR": "/var/tmp"}  # fmt: skip  # /tmp may be the host's temp folder (a share)

    def start(self) -> None:
        try:
            self.pid = spawn(AGENT_ARGV, AGENT_LOG, self.env)
            self.started = time.monotonic()
        except OSError as exc:
            say(f"cannot start the guest agent: {exc}")
            self.exited(None)

    def exited(self, status: int | None) -> None:
        ran = time.monotonic() - self.started
        self.pid = 0
        self.delay = 1.0 if ran > 60 else min(self.delay * 2, 15.0)
        self.next_start = time.monotonic() + self.delay
        note = f"agent exited (status {status}) after {ran:.1f} s; restarting in {self.delay:.0f} s"
        try:
            with open(AGENT_LOG, "a") as log:
                log.write(f"pymachine-init: {note}\n")
        except OSError as exc:  # a full disk: an error here ended supervise(), which began the boot over
            say(f"{note} (not in {AGENT_LOG}: {exc})")

    def due(self) -> float | None:
        """Seconds until the next start attempt, or None while it runs."""
        return None if self.pid else max(0.0, self.next_start - time.monotonic())


def power_buttons() -> list[int]:
    """Open every input device that is an ACPI power button (needs the `button` and `evdev` modules)."""
    fds = []
    base = "/sys/class/input"
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(f"{base}/{name}/device/name") as fh:
                if not name.startswith("event") or "power button" not in fh.read().lower():
                    continue
            fds.append(os.open(f"/dev/input/{name}", os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            continue
    return fds


def power_pressed(fd: int) -> bool:
    try:
        data = os.read(fd, INPUT_EVENT.size * 64)
    except BlockingIOError:
        return False
    for offset in range(0, len(data) - INPUT_EVENT.size + 1, INPUT_EVENT.size):
        _, _, kind, code, value = INPUT_EVENT.unpack_from(data, offset)
        if kind == EV_KEY and code == KEY_POWER and value == 1:
            return True
    return False


def supervise() -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    pending: list[int] = []
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGPWR, signal.SIGINT, signal.SIGUSR2, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: pending.append(signum))  # _signal: plain ints, no enums

    # Grow the filesystem online when the machine's disk is larger than the base image (a no-op otherwise).
    spawn(["/usr/sbin/resize2fs", "/dev/vda"], "/run/resize2fs.log")
    shares()  # before the agent: it may rely on os.path.ismount(share) (their own modprobe, only with shares)
    agent = Agent()
    agent.start()
    mark("agent")
    write_timeline()
    modules = Modules()
    buttons: list[int] = []
    powering_off = False

    while True:
        timeout = min((t for t in (agent.due(), modules.due()) if t is not None), default=None)
        try:
            ready, _, _ = select.select([wake_r, *buttons], [], [], timeout)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            os.read(wake_r, 512)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == agent.pid:
                agent.exited(os.waitstatus_to_exitcode(status))
                modules.load()  # an agent that died before it asked: the power button needs them all the same
            elif pid == modules.pid:
                modules.loaded(os.waitstatus_to_exitcode(status))
                buttons = power_buttons()
                say(f"guest agent pid {agent.pid}; power button {'watched' if buttons else 'not found'}")
                os.write(1, b"PYMACHINE_READY\n")
        if signal.SIGUSR1 in pending or modules.due() == 0.0:  # the agent answers (or never asked in time)
            modules.load()
        pressed = any(power_pressed(fd) for fd in buttons if fd in ready)
        stop = pressed or any(s not in (signal.SIGCHLD, signal.SIGUSR1) for s in pending)
        pending.clear()
        if stop and not powering_off:
            powering_off = True
            say("power off requested")
            spawn([POWEROFF], "/dev/console")
        if not powering_off and not agent.pid and agent.due() == 0.0:
            agent.start()


class Modules:
    """The engine's kernel modules (ENGINE_MODULES), loaded once the guest agent answers: it asks with
    SIGUSR1 right after it binds its socket, so `/_ping`, `version` and an image pull answer without them, and
    whatever needs them (containers, networks) waits in the agent until MODULES_STATUS says they are in
    (pymachine_agent/kernelgate.py). Not alongside the agent's imports: loading a module makes the other vCPU
    take IPIs (text patching, expedited RCU), and with the imports busy on it a `modprobe -a` of a few modules
    took 9-14 s instead of 2-3 s at a host load of 30 (docs/machines.md, third and sixth passes). An agent
    that dies or hangs before it asks does not keep them (and the power button) out: they load when it exits
    or FALLBACK_S after the boot's first agent start."""

    FALLBACK_S = 60.0

    def __init__(self) -> None:
        self.pid = 0
        self.started = False
        self.deadline = time.monotonic() + self.FALLBACK_S

    def due(self) -> float | None:
        return None if self.started else max(0.0, self.deadline - time.monotonic())

    def load(self) -> None:
        if self.started:
            return
        self.started = True
        try:
            self.pid = spawn(["/usr/sbin/modprobe", "-a", *ENGINE_MODULES], "/run/modprobe.log")
        except OSError as exc:
            say(f"cannot run modprobe: {exc}")
            self.loaded(-1)

    def loaded(self, status: int) -> None:
        self.pid = 0
        if status:
            say("some engine modules failed to load (see /run/modprobe.log)")
        # atomically: the agent reads it as soon as it exists
        write(MODULES_STATUS + ".tmp", f'{{"status": {status}, "log": "/run/modprobe.log"}}\n')
        os.rename(MODULES_STATUS + ".tmp", MODULES_STATUS)
        mark("modules")
        write_timeline()


def main() -> None:
    mark("init")  # the kernel's and the initrd's share of the boot ends here
    os.environ.update({"PATH": PATH, "LANG": "C.UTF-8"})
    os.umask(0o022)
    filesystems()
    tool_env()
    seed()
    ShareModules.load()
    identity()
    network()
    sshd()
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (1048576, 1048576))
    except (ValueError, OSError):
        pass
    while True:
        try:
            supervise()
        except Exception:  # noqa: BLE001 - keep reaping whatever happens
            say(f"supervisor failed, restarting it:\n{_traceback()}")
            time.sleep(1)


if __name__ == "__main__":
    main()
