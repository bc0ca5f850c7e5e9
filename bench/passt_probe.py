"""Published ports through passt against QEMU's user network (slirp hostfwd) and `ssh -L`, in one run.

    python bench/passt_probe.py [--mib 200] [--repeat 3] [--connects 30] [--ports 1-15000] [--json out.json]
    python bench/passt_probe.py starts [--repeat 3]      # passt's start: time, fds, kernel memory per range
    python bench/passt_probe.py guest-initiated [--mib N]  # connections the guest opens through passt

Boots the guest image with plain QEMU (tests/support/guestboot.py: slirp with restrict=on as NIC 1, as the
machines) plus a second virtio-net NIC whose back end is passt (`-netdev stream`, QEMU 7.2), passt running in
a user + network namespace of its own (bench/passt_ns.py: nothing there reaches the host's network).
bench/channel_guest.py serves every channel in the guest and reports the guest's CPU per transfer. Rows, in
alternating rounds, --mib MiB each, medians of --repeat, both directions:

  ssh -L → a guest process                       the peer (issue 17: ≥ 3× this)
  slirp hostfwd → a guest process                raw slirp
  passt → a guest process                        raw passt (a socket connected inside passt's namespace)
  slirp hostfwd → DNAT → a netns process         a published port today (the engine's DNAT to a veth)
  passt → DNAT → a netns process                 the same through passt
  relay → passt → DNAT → a netns process         the design: the host agent's listener on 127.0.0.1, splice
                                                 into passt's namespace (passt_ns.relay)

Per row: MB/s, × `ssh -L`, CPU per MiB of the guest (/proc/stat, both vCPUs), QEMU (all threads), passt, and
the relay process. Then connect latency (connect, 1 byte, the guest's answer), what the guest reaches through
passt (outbound), and a save/restore of the VM (QMP migrate to a file, a new QEMU started with -incoming):
does the new QEMU's stream NIC reconnect to passt, do connections survive. Last, passt restarted under a
running QEMU. docs/hostagent.md "passt measured" has the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import channel_guest as wire  # noqa: E402
import passt_ns  # noqa: E402
from channel_probe import Row, alternating_rounds, connect_tcp, hmp, qemu_cpu, ssh_tunnel, transfer  # noqa: E402
from support.guestboot import BootedGuest, boot_guest, free_port, qemu_argv, wait_for_banner  # noqa: E402

from pymachine.hostvm.hostagent.qemufwd import parse_usernet  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
ROWS = tuple(
    Row(f"{label} {arrow} {end}", direction, channel, op)
    for direction, arrow, op in (("in", "→", b"S"), ("out", "←", b"G"))
    for label, channel, end in (
        ("ssh -L", "ssh", "guest"),
        ("hostfwd", "fwd", "guest"),
        ("passt", "passt", "guest"),
        ("hostfwd", "dnat", "DNAT netns"),
        ("passt", "passt-dnat", "DNAT netns"),
        ("relay+passt", "relay", "DNAT netns"),
    )
)
TARGET = {
    "passt": wire.TCP_PORT,
    "passt-dnat": wire.DNAT_PORT,
}  # guest ports reached inside passt's namespace


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process, its ended threads included (the relay's per-connection threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


class Passt:
    """passt_ns.py's helper under `unshare -Urn`: passt in its own user + network namespace."""

    def __init__(self, workdir: Path, ports: str) -> None:
        self.ctl, self.sock = workdir / "ctl", workdir / "passt.sock"
        self.proc = subprocess.Popen(
            ["unshare", "-Urn", sys.executable, str(HERE / "passt_ns.py"), "helper",
             "--ctl", str(self.ctl), "--sock", str(self.sock), "--ports", ports],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline().split() if self.proc.stdout else []
        if not line or line[0] != "ready":
            self.proc.kill()
            raise RuntimeError(f"passt did not start: {line}")
        self.pid, self.start_seconds, self.fds = int(line[1]), float(line[2]), int(line[3])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, 15)
            self.proc.wait(10)


@contextmanager
def relay(ctl: Path, target: int) -> Iterator[tuple[int, int]]:
    """passt_ns.py's relay as its own process (its CPU counted alone): (host port, pid)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "passt_ns.py"), "relay", "--ctl", str(ctl), "--listen", str(port),
         "--target", str(target)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if not proc.stdout or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the relay did not start")
        yield port, proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def guest_iface(guest: BootedGuest, mtu: int) -> str:
    """Bring up the passt NIC (found by its MAC) with passt's address; its name. slirp's NIC keeps 1500
    (QEMU 7.2's -netdev user has no mtu option); passt's guests get 65520 by default."""
    script = (
        f'for i in /sys/class/net/*; do [ "$(cat $i/address)" = {passt_ns.MAC} ] && n=$(basename $i); done; '
        f"ip link set $n mtu {mtu} up && ip addr add {passt_ns.GUEST_IP}/{passt_ns.PREFIX} dev $n && "
        # passt learns the guest's MAC from its first IPv4 frame (not from ARP) and sends to ff:ff:.. until
        # then, which the guest's TCP drops (not PACKET_HOST): one datagram to the gateway teaches it
        f'python3 -c \'import socket; socket.socket(2, 2).sendto(b"x", ("{passt_ns.GATEWAY}", 9))\' && '
        "echo $n"
    )
    res = guest.run(script)
    if res.status != 0 or not res.stdout.strip():
        raise RuntimeError(f"no passt NIC in the guest: {res.stderr}")
    return res.stdout.strip()


def start_guest_end(guest: BootedGuest, uplinks: list[str]) -> None:
    """channel_guest.py in its own session, fed by a `sleep` (it serves until its stdin ends), so that it
    outlives the SSH session across the save/restore below."""
    sftp = guest.ssh().open_sftp()
    sftp.put(str(HERE / "channel_guest.py"), "/root/channel_guest.py")
    sftp.put(str(HERE / "passt_outbound.py"), "/root/passt_outbound.py")
    sftp.put(str(HERE / "passt_guestpeer.py"), "/root/passt_guestpeer.py")
    sftp.close()
    guest.run(f"setsid sh -c 'sleep 100000 | python3 /root/channel_guest.py - {' '.join(uplinks)}"
              " >/root/cg.log 2>&1' </dev/null >/dev/null 2>&1 &")  # fmt: skip
    res = guest.run("for i in $(seq 300); do grep -q ready /root/cg.log && exit 0; sleep 0.1; done; "
                    "cat /root/cg.log; exit 1")  # fmt: skip
    if res.status != 0:
        raise RuntimeError(f"channel_guest.py did not start: {res.stdout[-2000:]}")


class Channels:
    """Opens a connection for a row's channel: TCP on the host's loopback, or inside passt's namespace."""

    def __init__(self, ports: dict[str, int], ctl: Path) -> None:
        self.ports, self.ctl = ports, ctl

    def open(self, channel: str) -> socket.socket:
        if channel in TARGET:
            sock = passt_ns.connect(self.ctl, TARGET[channel])
            sock.settimeout(600)
            return sock
        return connect_tcp(self.ports[channel])


def run_rounds(
    channels: Channels, pids: dict[str, int], size: int, repeat: int, out: Path | None
) -> dict[str, list[dict]]:
    def once(row: Row, nbytes: int) -> dict:
        before = {name: proc_cpu(pid) for name, pid in pids.items() if name != "qemu"}
        q0, l0 = qemu_cpu(pids["qemu"]), os.getloadavg()[0]
        with channels.open(row.channel) as sock:
            seconds, got = transfer(sock, row.op, nbytes)
        q1 = qemu_cpu(pids["qemu"])
        after = {name: proc_cpu(pid) - before[name] for name, pid in pids.items() if name != "qemu"}
        return {"mbps": nbytes / seconds / 1e6, "seconds": seconds, "qemu_cpu_s": q1[0] - q0[0],
                "qemu_main_s": q1[1] - q0[1], "passt_cpu_s": after["passt"], "relay_cpu_s": after["relay"],
                "load": l0, **got}  # fmt: skip

    # warm: ssh -L's channel machinery, the guest's page cache, ARP through passt
    return alternating_rounds(ROWS, once, size, repeat, out)


def latencies(channels: Channels, n: int) -> dict[str, list[float]]:
    """connect + 1 byte + the guest's report, a new connection each, in rounds over the host → guest rows."""
    rows = [row for row in ROWS if row.direction == "in"]
    out: dict[str, list[float]] = {row.label: [] for row in rows}
    for _ in range(n):
        for row in rows:
            start = time.perf_counter()
            with channels.open(row.channel) as sock:
                transfer(sock, b"S", 1)
            out[row.label].append(time.perf_counter() - start)
    return out


def report(results: dict[str, list[dict]], lat: dict[str, list[float]], mib: int, repeat: int) -> None:
    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    def cpu(label: str, key: str) -> str:
        return f"{med(label, key) * 1000 / mib:6.1f}"

    loads = [r["load"] for rows in results.values() for r in rows]
    print(f"\n{mib} MiB per transfer, median of {repeat}; host load average {min(loads):.1f}-{max(loads):.1f}"
          f" on {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"{'':<34} {'MB/s':>6} {'× ssh':>7}  CPU ms/MiB: {'guest':>5} {'QEMU':>6} {'passt':>6} {'relay':>6}"
    )
    for row in ROWS:
        peer = ROWS[0 if row.direction == "in" else 6].label
        speed = med(row.label, "mbps")
        cpus = " ".join(
            cpu(row.label, key) for key in ("guest_busy_s", "qemu_cpu_s", "passt_cpu_s", "relay_cpu_s")
        )
        print(f"{row.label:<34} {speed:7.1f} {speed / med(peer, 'mbps'):7.2f}×  {'':<11} {cpus}")
    pairs = [
        (f"{a} {arrow} {end}", f"{b} {arrow} {end}")
        for arrow in ("→", "←")
        for a, b, end in (
            ("passt", "hostfwd", "guest"),
            ("passt", "hostfwd", "DNAT netns"),
            ("relay+passt", "hostfwd", "DNAT netns"),
            ("relay+passt", "passt", "DNAT netns"),
        )
    ]
    for a, b in pairs:
        print(f"  {a} / {b}: {med(a, 'mbps') / med(b, 'mbps'):.2f}×")
    if lat:
        print("connect + 1 byte + answer, p50 / p90 ms:")
        for label, values in lat.items():
            ordered = sorted(values)
            p50, p90 = ordered[len(ordered) // 2], ordered[int(0.9 * (len(ordered) - 1))]
            print(f"  {label:<34} {p50 * 1e3:7.2f} / {p90 * 1e3:7.2f}")


def outbound(guest: BootedGuest, iface: str) -> str:
    """What the guest reaches through passt: routes to two documentation (TEST-NET) addresses through the
    passt NIC, then TCP to them, to passt's gateway and namespace addresses, and a DNS query to the gateway.
    passt's namespace has no way out, so nothing can leave the host whatever passt does."""
    guest.run(f"ip route add 192.0.2.1/32 via {passt_ns.GATEWAY} dev {iface}; "
              f"ip route add 198.51.100.1/32 via {passt_ns.GATEWAY} dev {iface}")  # fmt: skip
    res = guest.run("python3 /root/passt_outbound.py", timeout=120)
    return res.stdout + res.stderr


def probe_once(sock: socket.socket, timeout: float = 60) -> str:
    """One 1 MiB S transfer on an open connection: 'ok' or the error."""
    try:
        sock.settimeout(timeout)
        transfer(sock, b"S", 1 << 20)
        return "ok"
    except (OSError, EOFError, ValueError) as exc:
        return repr(exc)


def save_restore(
    guest: BootedGuest, workdir: Path, manifest: object, extra: list[str], channels: Channels, hold: bool
) -> str:
    """Save the running VM to a file (QMP migrate, paused first as libvirt's save does), kill QEMU, start a
    new one on the same disk with -incoming and load it. With `hold`, a slirp and a passt connection opened
    before the save are tried again after it."""
    lines = []
    held = {"hostfwd": channels.open("fwd"), "passt": channels.open("passt-dnat")} if hold else {}
    for name, sock in held.items():
        lines.append(f"before save, open {name} connection: {probe_once(sock)}")
    state = workdir / "saved.vmstate"
    qmp = guest.console_log.parent / "qmp.sock"
    from pymachine.hostvm.drivers.qemu import qmp_command

    qmp_command(qmp, "stop")
    qmp_command(qmp, "migrate", {"uri": f"exec:cat > {state}"})
    while (status := qmp_command(qmp, "query-migrate").get("status")) not in ("completed", "failed"):  # type: ignore[union-attr]
        time.sleep(0.1)
    lines.append(f"saved: {status}, {state.stat().st_size / 1e6:.0f} MB")
    guest.process.kill()
    guest.process.wait(30)
    argv = qemu_argv(manifest, workdir / "vm" / "overlay.qcow2", workdir / "vm" / "seed.tar",  # type: ignore[arg-type]
                     guest.ssh_port, guest.console_log, 1024, 2, [*extra, "-incoming", "defer"])  # fmt: skip
    start = time.perf_counter()
    qmp.unlink(missing_ok=True)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    guest.process = proc  # boot_guest's exit kills this one now
    deadline = time.monotonic() + 60
    while not qmp.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(
                f"the restoring QEMU did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    qmp_command(qmp, "migrate-incoming", {"uri": f"exec:cat {state}"})
    while qmp_command(qmp, "query-status").get("status") == "inmigrate":  # type: ignore[union-attr]
        time.sleep(0.05)
    qmp_command(qmp, "cont")
    lines.append(f"restored and running {time.perf_counter() - start:.2f} s after the new QEMU's start")
    guest._ssh = None
    wait_for_banner(guest.ssh_port, proc, 120, guest.console_log)
    for name, sock in held.items():
        lines.append(f"after restore, the connection opened before the save ({name}): {probe_once(sock)}")
        sock.close()
    kept = [r.guest_port for r in parse_usernet(hmp(guest, "info usernet"))]
    lines.append(f"hostfwd rules in the restored QEMU, by guest port: {kept} (run-time ones are added again)")
    for channel, guest_port in (("fwd", wire.TCP_PORT), ("dnat", wire.DNAT_PORT)):  # as the reconcile does
        if channel in channels.ports:
            hmp(guest, f"hostfwd_add net0 tcp:127.0.0.1:{channels.ports[channel]}-:{guest_port}")
    for name, channel in (("hostfwd", "fwd"), ("passt", "passt"), ("relay+passt", "relay")):
        if channel not in TARGET and channel not in channels.ports:
            continue
        try:
            with channels.open(channel) as sock:
                lines.append(f"after restore, a new {name} connection: {probe_once(sock)}")
        except OSError as exc:
            lines.append(f"after restore, a new {name} connection: {exc!r}")
    return "\n".join(lines)


def restart_passt(passt: Passt, workdir: Path, ports: str, channels: Channels) -> tuple[str, Passt]:
    """passt killed and started again on the same socket path under a running QEMU (7.2: no reconnect)."""
    passt.stop()
    new = Passt(workdir, ports)
    try:
        with channels.open("passt") as sock:
            result = probe_once(sock, 20)
    except OSError as exc:
        result = repr(exc)
    return f"passt restarted under the running QEMU, a new connection: {result}", new


def measure(mib: int, repeat: int, connects: int, ports: str, mtu: int, out: Path | None) -> None:
    from pymachine.hostvm import image

    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    manifest = image.ensure_image()
    size = mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="passt-"))
    passt = Passt(work, ports)
    print(f"guest MTU on the passt NIC: {mtu}; on slirp's: 1500")
    print(f"passt: pid {passt.pid}, started in {passt.start_seconds * 1e3:.0f} ms with {passt.fds} fds"
          f" (ports {ports}); its network namespace is the host's: "
          f"{os.readlink(f'/proc/{passt.pid}/ns/net') == os.readlink('/proc/self/ns/net')}")  # fmt: skip
    sink = ns_peer(passt)
    extra = passt_ns.passt_nic_args(passt.sock)
    try:
        boot = boot_guest(manifest, work / "vm", cpus=2, memory_mib=1024, boot_timeout=900, extra_args=extra)
        with boot as g:
            iface = guest_iface(g, mtu)
            start_guest_end(g, ["eth0", "eth1"])  # slirp's NIC and passt's, whichever is which
            # Seen here: passt (this build) completes no host-opened connection until the guest has opened
            # one through it (the SYN is not sent, or the guest's SYN-ACK is not taken); one guest-opened
            # transfer to the namespace's peer first
            print(f"guest-opened passt connection first: {guest_run_peer(g, 'S', 1 << 20)}")
            ports_ = {"fwd": free_port(), "dnat": free_port(), "ssh": free_port()}
            hmp(g, f"hostfwd_add net0 tcp:127.0.0.1:{ports_['fwd']}-:{wire.TCP_PORT}")
            hmp(g, f"hostfwd_add net0 tcp:127.0.0.1:{ports_['dnat']}-:{wire.DNAT_PORT}")
            tunnel = ssh_tunnel(g, work, ports_["ssh"])
            with relay(passt.ctl, wire.DNAT_PORT) as (relay_port, relay_pid):
                ports_["relay"] = relay_port
                channels = Channels(ports_, passt.ctl)
                pids = {"qemu": g.process.pid, "passt": passt.pid, "relay": relay_pid}
                try:
                    results = run_rounds(channels, pids, size, repeat, out)
                    lat = latencies(channels, connects) if connects else {}
                    report(results, lat, mib, repeat)
                    print("\noutbound from the guest through passt:\n" + outbound(g, iface))
                    tunnel.terminate()
                    print(save_restore(g, work, manifest, extra, channels, hold=True))
                    line, passt = restart_passt(passt, work, ports, channels)
                    print(line)
                    print("save and restore again: the new QEMU connects to the new passt")
                    print(save_restore(g, work, manifest, extra, channels, hold=False))
                finally:
                    if tunnel.poll() is None:
                        tunnel.terminate()
                        tunnel.wait(10)
    finally:
        sink.kill()
        passt.stop()
        shutil.rmtree(work, ignore_errors=True)


def ns_peer(passt: Passt) -> subprocess.Popen[str]:
    """passt_nssink.py inside passt's namespace (nsenter into the helper's user + network namespace)."""
    sink = subprocess.Popen(
        ["nsenter", "-t", str(passt.proc.pid), "-U", "-n", "--preserve-credentials", sys.executable,
         str(HERE / "passt_nssink.py"), passt_ns.NS_IP],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if not sink.stdout or sink.stdout.readline().strip() != "ready":
        raise RuntimeError("the namespace's peer did not start")
    return sink


def guest_run_peer(g: BootedGuest, op: str, size: int) -> dict:
    res = g.run(f"python3 /root/passt_guestpeer.py {passt_ns.NS_IP} 7000 {op} {size}", timeout=900)
    if res.status != 0:
        raise RuntimeError(f"passt_guestpeer.py: {res.stderr[-1500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def guest_initiated(mib: int, repeat: int, ports: str, out: Path | None) -> None:
    """Connections the guest opens through passt (to a peer in passt's namespace) against slirp hostfwd
    connections to a guest process, both directions, alternating; then the outbound check and a save/restore
    (does the restored QEMU's NIC reach passt again)."""
    from pymachine.hostvm import image

    os.environ.setdefault("PYMACHINE_CACHE", "/var/tmp/pymachine-test-cache")
    manifest = image.ensure_image()
    size = mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="passt-"))
    passt = Passt(work, ports)
    sink = ns_peer(passt)
    extra = passt_ns.passt_nic_args(passt.sock)
    try:
        with boot_guest(
            manifest, work / "vm", cpus=2, memory_mib=1024, boot_timeout=900, extra_args=extra
        ) as g:
            iface = guest_iface(g, passt_ns.MTU)
            start_guest_end(g, ["eth0", "eth1"])
            sftp = g.ssh().open_sftp()
            sftp.put(str(HERE / "passt_guestpeer.py"), "/root/passt_guestpeer.py")
            sftp.close()
            fwd = free_port()
            hmp(g, f"hostfwd_add net0 tcp:127.0.0.1:{fwd}-:{wire.TCP_PORT}")
            rows = ["hostfwd → guest", "passt (guest-opened) → guest", "hostfwd ← guest",
                    "passt (guest-opened) ← guest"]  # fmt: skip
            res: dict[str, list[dict]] = {r: [] for r in rows}

            def once(row: str, nbytes: int) -> dict:
                q0, p0, l0 = qemu_cpu(g.process.pid)[0], proc_cpu(passt.pid), os.getloadavg()[0]
                if row.startswith("hostfwd"):
                    with connect_tcp(fwd) as sock:
                        seconds, got = transfer(sock, b"S" if "→" in row else b"G", nbytes)
                    got = {"mbps": nbytes / seconds / 1e6, "guest_busy_s": got["guest_busy_s"]}
                else:  # → guest: the namespace's peer sends (G); ← guest: the guest sends (S)
                    got = guest_run_peer(g, "G" if "→" in row else "S", nbytes)
                return {**got, "qemu_cpu_s": qemu_cpu(g.process.pid)[0] - q0,
                        "passt_cpu_s": proc_cpu(passt.pid) - p0, "load": l0}  # fmt: skip

            for row in rows:
                once(row, 1 << 20)
            for r in range(repeat):
                for row in rows if r % 2 == 0 else rows[::-1]:
                    res[row].append(got := once(row, size))
                    print(
                        f"round {r + 1} {row:<30} {got['mbps']:7.1f} MB/s load {got['load']:.1f}",
                        file=sys.stderr,
                    )
                    if out:
                        out.write_text(json.dumps(res, indent=1))
            lo, hi = (
                min(x["load"] for v in res.values() for x in v),
                max(x["load"] for v in res.values() for x in v),
            )
            print(f"{mib} MiB, median of {repeat}, load {lo:.1f}-{hi:.1f}; passt's guest MTU 65520")
            for row in rows:
                med = {k: statistics.median(x[k] for x in res[row]) for k in res[row][0]}
                ms = {k: med[k] * 1e3 / mib for k in ("guest_busy_s", "qemu_cpu_s", "passt_cpu_s")}
                print(
                    f"  {row:<30} {med['mbps']:7.1f} MB/s  CPU ms/MiB: guest {ms['guest_busy_s']:6.1f}"
                    f" QEMU {ms['qemu_cpu_s']:6.1f} passt {ms['passt_cpu_s']:6.1f}"
                )
            channels = Channels({"fwd": fwd}, passt.ctl)
            for _ in range(3):  # host → guest through passt (a published port's direction), after the rounds
                try:
                    with channels.open("passt") as sock:
                        print(f"a host-opened passt connection (1 MiB): {probe_once(sock, 20)}")
                except OSError as exc:
                    print(f"a host-opened passt connection: {exc!r}")
            print("\noutbound from the guest through passt:\n" + outbound(g, iface))
            print(save_restore(g, work, manifest, extra, channels, hold=False))
            print(f"after restore, a guest-opened passt connection: {guest_run_peer(g, 'S', 1 << 20)}")
    finally:
        sink.kill()
        passt.stop()
        shutil.rmtree(work, ignore_errors=True)


def slab_kib() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("SUnreclaim:"))


def starts(repeat: int) -> None:
    """passt's start (to its pid file: every listener bound) per forwarded range, its fds, and the kernel's
    unreclaimable slab it adds (the listening sockets), in alternating rounds."""
    ranges = ["9555", "61000-61063", "1-1000", "1-5000", "1-15000"]
    got: dict[str, list[tuple[float, float, int, int]]] = {r: [] for r in ranges}
    for i in range(repeat):
        for spec in ranges if i % 2 == 0 else ranges[::-1]:
            work = Path(tempfile.mkdtemp(prefix="passt-s-"))
            before, start = slab_kib(), time.perf_counter()
            p = Passt(work, spec)
            whole = time.perf_counter() - start
            time.sleep(0.3)
            got[spec].append((p.start_seconds, whole, p.fds, slab_kib() - before))
            p.stop()
            shutil.rmtree(work, ignore_errors=True)
            time.sleep(0.5)
    print(f"passt start, median of {repeat} (host load {os.getloadavg()[0]:.1f}):")
    for spec, values in got.items():
        secs, whole, fds, slab = (statistics.median(v[k] for v in values) for k in range(4))
        print(
            f"  -t {spec:<11} passt {secs * 1e3:6.1f} ms, with unshare + helper {whole * 1e3:6.1f}"
            f" ms; {fds:6.0f} fds; +{slab / 1024:6.1f} MiB slab"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="rows", choices=["rows", "starts", "guest-initiated"])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connects", type=int, default=30)
    parser.add_argument(
        "--ports", default="1-15000", help="passt's forwarded range (this host: ≤ ~19,000 fds)"
    )
    parser.add_argument("--mtu", type=int, default=passt_ns.MTU, help="the passt NIC's MTU in the guest")
    parser.add_argument("--json", type=Path, help="write every transfer's numbers here")
    args = parser.parse_args()
    if args.what == "starts":
        starts(args.repeat)
    elif args.what == "guest-initiated":
        guest_initiated(args.mib, args.repeat, args.ports, args.json)
    else:
        measure(args.mib, args.repeat, args.connects, args.ports, args.mtu, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
