"""Issue 12 point 4 in a real 1 GiB machine: a 1 GiB file copies out of and into a container through the
engine's socket, done inside the VM by a small Python client (no SSH transfer of the data), while the agent's
peak RSS (VmHWM, reset before each direction) stays far below the file size."""

from __future__ import annotations

import json

import pytest
from support.hostagent_vm import VmMachine, env_of

B = "pymachine/busybox"
GIB = 1 << 30

CLIENT = r"""
import http.client, json, os, socket, sys, tarfile
SOCK, CID, GIB = "/run/pymachine/docker.sock", sys.argv[1], 1 << 30

class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(SOCK)

def agent_pid():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"pymachine_agent" in argv and b"serve" in argv:
            return pid
    raise SystemExit("no agent process")

PID = agent_pid()

def hwm():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

def reset():
    with open(f"/proc/{PID}/clear_refs", "w") as f:
        f.write("5")

def upload():
    info = tarfile.TarInfo("up.bin")
    info.size = GIB
    yield info.tobuf(tarfile.PAX_FORMAT)
    zeros = bytes(1 << 20)
    for _ in range(GIB >> 20):
        yield zeros
    yield bytes(1024)

out = {"mem_total": int(open("/proc/meminfo").readline().split()[1]) * 1024}
reset()
c = Conn("localhost", timeout=3000)
c.request("GET", f"/containers/{CID}/archive?path=/big")
r = c.getresponse()
n = 0
while piece := r.read(1 << 20):
    n += len(piece)
out.update(out_status=r.status, out_bytes=n, out_hwm=hwm())
c.close()
reset()
c = Conn("localhost", timeout=3000)
c.request("PUT", f"/containers/{CID}/archive?path=/tmp", body=upload(), encode_chunked=True,
          headers={"Content-Type": "application/x-tar"})
r = c.getresponse()
out.update(in_status=r.status, in_body=r.read().decode(errors="replace")[:300], in_hwm=hwm())
print(json.dumps(out))
"""


@pytest.fixture
def vm(request: pytest.FixtureRequest) -> VmMachine:
    return request.getfixturevalue("hostagent_machine")


def test_a_1gib_file_copies_out_and_in_on_a_1gib_machine(vm: VmMachine) -> None:
    script = "dd if=/dev/zero of=/big bs=1M seek=1023 count=1 2>/dev/null; sleep 3600"
    cid = vm.docker("run", "-d", B, "sh", "-c", script).stdout.strip()
    try:
        with env_of(vm):
            from pymachine.hostvm import ssh

            code, out, err = ssh.run(vm.name, f"python3 - {cid} <<'EOF'\n{CLIENT}\nEOF", timeout=3000)
        assert code == 0, err.decode(errors="replace")
        got = json.loads(out.decode().strip().splitlines()[-1])
        print("in the VM (MiB):", {k: got[k] >> 20 for k in ("mem_total", "out_bytes", "out_hwm", "in_hwm")})
        assert got["mem_total"] <= 1100 << 20  # the machine is the 1 GiB default
        assert got["out_status"] == 200 and got["out_bytes"] > GIB
        assert got["in_status"] == 200, got["in_body"]
        size = vm.docker("exec", cid, "stat", "-c", "%s", "/tmp/up.bin").stdout.strip()
        assert size == str(GIB)
        assert got["out_hwm"] < 200 << 20 and got["in_hwm"] < 200 << 20, got
    finally:
        vm.docker("rm", "-f", cid, check=False)
