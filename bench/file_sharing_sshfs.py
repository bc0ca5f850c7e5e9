"""Reverse-sshfs file sharing, each as a ratio to the same work on the guest's own disk (issue 13's bench).

    python bench/file_sharing_sshfs.py --machine NAME   # a running machine of this PYMACHINE_HOME

(bench/file_sharing.py measures every transport, sshfs included, on one machine restarted per transport; this
one adds OpenSSH's sftp-server as a peer for the server choice, on a machine that is already running.)

The work runs in the guest (python3) on (a) a folder on the guest's disk, (b) a host folder mounted over
reverse-sshfs and served by the host agent's in-process SFTP server (sftpshare.py, what `share_transport:
sshfs` uses), (c) the same mount served by OpenSSH's sftp-server when /usr/lib/openssh/sftp-server exists
(the alternative we did not choose: it cannot be confined to the share without root). Workloads: sequential
write and read of 256 MiB (guest caches dropped before reading), creating 5,000 small files, a stat walk over
10,000 files (made beforehand, caches dropped). Lower seconds is better; ratio = shared / native.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

WORK = r"""
import json, os, sys, time
d, what = sys.argv[1], sys.argv[2]
MiB = 1 << 20
def drop():
    os.sync(); open('/proc/sys/vm/drop_caches', 'w').write('3')
t = time.perf_counter()
if what == 'write':
    block = os.urandom(MiB)
    with open(f'{d}/big', 'wb') as f:
        for _ in range(256): f.write(block)
        f.flush(); os.fsync(f.fileno())
elif what == 'read':
    drop(); t = time.perf_counter()
    with open(f'{d}/big', 'rb') as f:
        while f.read(MiB): pass
elif what == 'create':
    os.mkdir(f'{d}/small')
    for i in range(5000):
        with open(f'{d}/small/{i}', 'wb') as f: f.write(b'x' * 100)
elif what == 'tree':
    for i in range(100):
        os.makedirs(f'{d}/tree/{i}')
        for j in range(100): open(f'{d}/tree/{i}/{j}', 'wb').close()
elif what == 'walk':
    drop(); t = time.perf_counter(); n = 0
    for root, dirs, files in os.walk(f'{d}/tree'):
        for name in files: os.lstat(os.path.join(root, name)); n += 1
    assert n == 10000, n
print(json.dumps(time.perf_counter() - t))
"""
WORKLOADS = ("write", "read", "create", "walk")
LABELS = {
    "write": "write 256 MiB",
    "read": "read 256 MiB",
    "create": "create 5,000 files",
    "walk": "stat 10,000",
}


def guest(transport, command: str, timeout: float = 3600) -> str:  # type: ignore[no-untyped-def]
    from pymachine.hostvm.hostagent.daemon import _exec

    return _exec(transport, command, timeout=timeout)


def workload(transport, folder: str, what: str) -> float:  # type: ignore[no-untyped-def]
    return float(json.loads(guest(transport, f"python3 -c {shlex.quote(WORK)} {shlex.quote(folder)} {what}")))


def make_tree(path: Path) -> None:
    for i in range(100):
        (path / "tree" / str(i)).mkdir(parents=True)
        for j in range(100):
            (path / "tree" / str(i) / str(j)).touch()


def measure(transport, folder: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {what: workload(transport, folder, what) for what in WORKLOADS}


def mount_with_sftp_server(transport, path: str):  # type: ignore[no-untyped-def]
    """The same guest command, served by OpenSSH's sftp-server as a child process, bytes pumped both ways."""
    from pymachine.hostvm.hostagent import sshfs

    proc = subprocess.Popen(
        ["/usr/lib/openssh/sftp-server", "-d", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    chan = transport.open_session(timeout=10)
    chan.exec_command(sshfs.mount_command(path, readonly=False))

    def up() -> None:
        while data := chan.recv(1 << 18):
            proc.stdin.write(data)
            proc.stdin.flush()
        proc.stdin.close()

    def down() -> None:
        while data := proc.stdout.read1(1 << 18):
            chan.sendall(data)

    threading.Thread(target=up, daemon=True).start()
    threading.Thread(target=down, daemon=True).start()
    deadline = time.monotonic() + 60
    while guest(transport, sshfs.check_command(path)).strip() != "fuse.sshfs":
        if time.monotonic() > deadline:
            raise TimeoutError("sftp-server mount")
        time.sleep(0.2)
    return proc, chan


def run(name: str) -> None:
    from pymachine.hostvm.hostagent import daemon, sshfs

    transport = daemon.machine_connect(name)()
    native = f"/var/tmp/pm-bench-native-{uuid.uuid4().hex[:6]}"
    results: dict[str, dict[str, float]] = {}
    guest(transport, f"mkdir -p {native}")
    try:
        guest(transport, f"python3 -c {shlex.quote(WORK)} {native} tree")
        results["guest disk"] = measure(transport, native)
    finally:
        guest(transport, f"rm -rf {native}")
    servers = ["ours"] + (["sftp-server"] if os.access("/usr/lib/openssh/sftp-server", os.X_OK) else [])
    for server in servers:
        host = Path(tempfile.mkdtemp(prefix="pm-bench-sshfs-", dir="/var/tmp"))
        make_tree(host)
        shares = sshfs.SshfsShares(daemon._exec, lambda **kw: None)
        proc = chan = None
        try:
            if server == "ours":
                m = shares.mount(transport, shares.add(str(host), False))
                if m.state != "mounted":
                    raise RuntimeError(m.error)
            else:
                proc, chan = mount_with_sftp_server(transport, str(host))
            results[f"sshfs ({server})"] = measure(transport, str(host))
        finally:
            guest(transport, sshfs.unmount_command(str(host)))
            if chan is not None:
                chan.close()
            if proc is not None:
                proc.kill()
            shutil.rmtree(host, ignore_errors=True)
    transport.close()
    native_t = results["guest disk"]
    print(f"{'':22}" + "".join(f"{LABELS[w]:>22}" for w in WORKLOADS))
    for label, times in results.items():
        cells = "".join(f"{times[w]:>9.2f} s ({times[w] / native_t[w]:5.1f}x)" for w in WORKLOADS)
        print(f"{label:22}{cells}")
    print("(x = time / guest disk time; for reads, 0.5x native speed is a ratio of 2.0x here)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", required=True, help="a running machine of this PYMACHINE_HOME")
    run(parser.parse_args().machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
