"""What an existing Linux host must have to run the guest agent, checked over SSH in one round trip.

`PROBE` is a POSIX sh script run on the host; it prints `key=value` lines and never fails half-way, so that
`findings()` (pure, unit-tested) can report every missing piece in one message instead of one per attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_PYTHON = (3, 11)  # the guest agent's language level (Debian 12's python3, the guest image's)
NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "user", "cgroup")

# Each line is `key=value`; a check that cannot run prints nothing for its key (read as "missing").
PROBE = r"""
echo "uid=$(id -u)"
echo "kernel=$(uname -sr)"
echo "arch=$(uname -m)"
echo "cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "disk_kb=$(df -Pk /var/lib 2>/dev/null | awk 'NR==2 {print $4}')"
for p in /usr/bin/python3 /usr/local/bin/python3 $(command -v python3 2>/dev/null); do
  if [ -x "$p" ]; then
    echo "python=$p"
    echo "python_version=$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
    break
  fi
done
for ns in NAMESPACES; do [ -e /proc/self/ns/$ns ] && echo "ns_$ns=yes"; done
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "cgroup=v2"
  echo "cgroup_controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
elif [ -d /sys/fs/cgroup ]; then
  echo "cgroup=v1"
fi
grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null
grep -qw overlay /proc/filesystems 2>/dev/null && echo "overlay=yes"
command -v nft >/dev/null 2>&1 && echo "nft_binary=yes"
nft list tables >/dev/null 2>&1 && echo "nft_kernel=yes"
command -v ip >/dev/null 2>&1 && echo "ip_binary=yes"
ip link show pymachine0 >/dev/null 2>&1 && echo "bridge_taken=yes"
ip -4 route show 2>/dev/null | grep -q '^172\.17\.' && echo "subnet_taken=yes"
[ -d /run/systemd/system ] && echo "systemd=yes"
command -v crontab >/dev/null 2>&1 && echo "crontab=yes"
[ -d /etc/init.d ] && echo "initd=yes"
true
""".replace("NAMESPACES", " ".join(NAMESPACES))


@dataclass(frozen=True)
class Findings:
    facts: dict[str, str]
    problems: list[str] = field(default_factory=list)  # the host cannot run the agent until each is fixed
    warnings: list[str] = field(default_factory=list)  # it runs, with less (cgroup v1: no limits)

    @property
    def python(self) -> str:
        return self.facts.get("python", "")

    @property
    def supervisor(self) -> str:
        """systemd where it runs the host, else cron's @reboot, else an init.d script (how the agent
        survives a reboot of the host)."""
        if self.facts.get("systemd") == "yes":
            return "systemd"
        if self.facts.get("crontab") == "yes":
            return "cron"
        return "initd"


def parse(output: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            facts.setdefault(key.strip(), value.strip())
    return facts


def findings(facts: dict[str, str]) -> Findings:
    """Every problem at once, each saying what to install or enable."""
    problems: list[str] = []
    warnings: list[str] = []
    if facts.get("uid") != "0":
        problems.append("the SSH user is not root: log in as root (--host root@HOST)")
    version = facts.get("python_version", "")
    if not facts.get("python"):
        problems.append("python3 is missing (install it: apt-get install python3)")
    elif _version(version) < MIN_PYTHON:
        want = ".".join(map(str, MIN_PYTHON))
        problems.append(f"python3 is {version or 'unusable'}, the agent needs {want} or newer")
    missing_ns = [ns for ns in NAMESPACES if facts.get(f"ns_{ns}") != "yes"]
    if missing_ns:
        problems.append(f"the kernel lacks namespaces: {', '.join(missing_ns)}")
    cgroup = facts.get("cgroup")
    if cgroup == "v1":
        warnings.append(
            "cgroup v1 (or hybrid) host: containers run without memory/CPU/pids limits "
            "(boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2)"
        )
    elif cgroup != "v2":
        problems.append("no cgroup file system at /sys/fs/cgroup")
    if facts.get("overlay") != "yes":
        problems.append("the kernel has no overlayfs (modprobe overlay failed)")
    if facts.get("nft_binary") != "yes":
        problems.append("nft is missing (apt-get install nftables)")
    elif facts.get("nft_kernel") != "yes":
        problems.append("nftables does not work in this kernel ('nft list tables' failed)")
    if facts.get("ip_binary") != "yes":
        problems.append("ip is missing (apt-get install iproute2)")
    # The engine's default network (bridge pymachine0, 172.17.0.0/16) is one per host for now.
    if facts.get("bridge_taken") == "yes":
        problems.append("another pymachine engine runs on this host (bridge pymachine0): one per host")
    elif facts.get("subnet_taken") == "yes":
        problems.append("172.17.0.0/16 is in use on this host (Docker's docker0?): the engine needs it")
    return Findings(facts, problems, warnings)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(".")[:2])
    except ValueError:
        return (0,)
