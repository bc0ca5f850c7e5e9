"""What `create --driver ssh` puts on an existing host, as shell text run over SSH: the agent's files, its
settings, and a supervisor that restarts it when it exits and starts it again after a reboot of the host.

Everything lives under names that carry the machine's name, so that `delete` removes exactly what `create`
installed and two machines (from two laptops) on one host never touch each other's files (nor a pymachine
installed on that host, whose .deb owns /opt/pymachine):

    /opt/pymachine-remote/NAME/      agent sources (pymachine_agent/), agent.json, run.sh
    /var/lib/pymachine-remote/NAME/  the engine's state: images, containers, volumes
    /run/pymachine-remote/NAME/      docker.sock, supervisor.pid
    /var/log/pymachine-NAME.log     the agent's log
    supervisor: /etc/systemd/system/pymachine-NAME.service (systemd), a tagged root crontab line (cron), or
                /etc/init.d/pymachine-NAME (neither)
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from .hostagent.ports import DEFAULT_HOST_IP


@dataclass(frozen=True)
class Layout:
    name: str
    python: str = "/usr/bin/python3"

    @property
    def code(self) -> str:
        return f"/opt/pymachine-remote/{self.name}"

    @property
    def state(self) -> str:
        return f"/var/lib/pymachine-remote/{self.name}"

    @property
    def run(self) -> str:
        return f"/run/pymachine-remote/{self.name}"

    @property
    def socket(self) -> str:
        return f"{self.run}/docker.sock"

    @property
    def log(self) -> str:
        return f"/var/log/pymachine-{self.name}.log"

    @property
    def unit(self) -> str:
        return f"pymachine-{self.name}"

    @property
    def initd(self) -> str:
        return f"/etc/init.d/{self.unit}"

    @property
    def systemd_unit(self) -> str:
        return f"/etc/systemd/system/{self.unit}.service"


def settings(name: str) -> str:
    """agent.json: ports published without a HostIp bind to the host's loopback, where the SSH link reaches
    them; nothing is opened on the host's network unless a user asks for an address. No young ports
    (network/young.py): their redirect to a relay is local delivery, which the guard's forward hook never
    sees, and the relay listens on every address of a host with a network of its own; the SSH path that
    serves an ssh machine's ports retries a young port's refused connects itself."""
    return json.dumps({"machine": name, "default_host_ip": DEFAULT_HOST_IP, "young_ports": False}) + "\n"


GUARD_TABLE = "pymachine_guard"
# The engine publishes a port on every address of its host (in a VM only the SSH link reaches it). On a host
# with a network of its own, connections DNATed to a container may come from loopback (the SSH link, the
# host's own programs) or from a container's bridge, never from the host's network interfaces: a published
# port reaches this computer and no one else. Locally made connections never pass the forward hook.
GUARD = f"""table inet {GUARD_TABLE}
delete table inet {GUARD_TABLE}
table inet {GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    ct status dnat iifname != "pymachine0" iifname != "pm-*" drop
  }}
}}
"""


def run_script(lay: Layout) -> str:
    """The respawn loop (cron and init.d; systemd restarts by itself). TERM ends the agent, then the loop."""
    q = shlex.quote
    serve = (
        f"PYTHONPATH={q(lay.code)} {q(lay.python)} -m pymachine_agent serve --socket {q(lay.socket)} "
        f"--state {q(lay.state)} --settings {q(lay.code + '/agent.json')} --log-file {q(lay.log)}"
    )
    return f"""#!/bin/sh
# pymachine guest agent of machine {lay.name}: restarted when it exits (installed by 'pymachine create')
mkdir -p {q(lay.run)}
echo $$ > {q(lay.run)}/supervisor.pid
nft -f - <<'EOF'
{GUARD}EOF
child=
trap 'kill "$child" 2>/dev/null; wait "$child"; rm -f {q(lay.run)}/supervisor.pid; exit 0' TERM INT
while :; do
  {serve} </dev/null >>{q(lay.log)} 2>&1 &
  child=$!
  wait "$child"
  sleep 1
done
"""


def systemd_unit(lay: Layout) -> str:
    return f"""[Unit]
Description=pymachine guest agent of machine {lay.name}
After=network.target

[Service]
ExecStart={lay.code}/run.sh
KillMode=process
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def initd_script(lay: Layout) -> str:
    return f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {lay.unit}
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: pymachine guest agent of machine {lay.name}
### END INIT INFO
case "$1" in
  start) {_start_detached(lay)} ;;
  stop) {_stop_loop(lay)} ;;
  *) echo "usage: $0 start|stop"; exit 1 ;;
esac
"""


def _start_detached(lay: Layout) -> str:
    """The loop in its own session, so that it outlives the SSH session that started it."""
    q = shlex.quote
    pid = f"{q(lay.run)}/supervisor.pid"
    return (
        f"if [ -f {pid} ] && kill -0 $(cat {pid}) 2>/dev/null; then :; "
        f"else setsid {q(lay.code)}/run.sh </dev/null >/dev/null 2>&1 & fi"
    )


def _stop_loop(lay: Layout) -> str:
    q = shlex.quote
    pid = f"{q(lay.run)}/supervisor.pid"
    return (
        f"if [ -f {pid} ]; then p=$(cat {pid}); kill $p 2>/dev/null; "
        f"for i in $(seq 100); do kill -0 $p 2>/dev/null || break; sleep 0.1; done; fi"
    )


CRON_TAG = "# pymachine-agent:"


def install(lay: Layout, supervisor: str) -> str:
    """Make the folders and the supervisor entry (the sources arrive as a tar on stdin, unpacked first)."""
    q = shlex.quote
    lines = [
        "set -e",
        "umask 022",
        f"mkdir -p {q(lay.code)} {q(lay.state)} {q(lay.run)}",
        f"tar -xzf - -C {q(lay.code)}",
        f"printf %s {q(settings(lay.name))} > {q(lay.code)}/agent.json",
        f"printf %s {q(run_script(lay))} > {q(lay.code)}/run.sh",
        f"chmod 755 {q(lay.code)}/run.sh",
    ]
    if supervisor == "systemd":
        lines += [
            f"printf %s {q(systemd_unit(lay))} > {q(lay.systemd_unit)}",
            "systemctl daemon-reload",
            f"systemctl enable {q(lay.unit)} >/dev/null 2>&1",
        ]
    elif supervisor == "cron":
        entry = f"@reboot {lay.code}/run.sh >/dev/null 2>&1 {CRON_TAG}{lay.name}"
        lines.append(
            f"(crontab -l 2>/dev/null | grep -vF {q(CRON_TAG + lay.name)}; echo {q(entry)}) | crontab -"
        )
    else:
        lines += [
            f"printf %s {q(initd_script(lay))} > {q(lay.initd)}",
            f"chmod 755 {q(lay.initd)}",
            # rc links where a SysV init reads them; absent tools are no error (the script is still there)
            f"(update-rc.d {q(lay.unit)} defaults || chkconfig --add {q(lay.unit)}) >/dev/null 2>&1 || true",
        ]
    return "\n".join(lines)


def update_sources(lay: Layout) -> str:
    """Replace the agent's sources with the tar on stdin (swap by rename); the caller restarts it."""
    q = shlex.quote
    d = q(lay.code)
    return (
        f"set -e; rm -rf {d}/.new; mkdir -p {d}/.new; tar -xzf - -C {d}/.new; "
        f"rm -rf {d}/.old; mv {d}/pymachine_agent {d}/.old; mv {d}/.new/pymachine_agent {d}/pymachine_agent; "
        f"rm -rf {d}/.new {d}/.old"
    )


def start(lay: Layout, supervisor: str) -> str:
    if supervisor == "systemd":
        return f"systemctl start {shlex.quote(lay.unit)}"
    return _start_detached(lay)


def stop(lay: Layout, supervisor: str) -> str:
    if supervisor == "systemd":
        return f"systemctl stop {shlex.quote(lay.unit)}"
    return _stop_loop(lay)


def running(lay: Layout, supervisor: str) -> str:
    """Exit 0 while the supervisor runs (the agent may be between two restarts)."""
    if supervisor == "systemd":
        return f"systemctl is-active --quiet {shlex.quote(lay.unit)}"
    pid = f"{shlex.quote(lay.run)}/supervisor.pid"
    return f"[ -f {pid} ] && kill -0 $(cat {pid}) 2>/dev/null"


def uninstall(lay: Layout, supervisor: str, bridge: str, nft_table: str) -> str:
    """Stop the agent and remove every file and supervisor entry of `install`, the engine's state, and the
    bridge and nftables table the engine made (containers were removed through its API before)."""
    q = shlex.quote
    lines = [stop(lay, supervisor) + " || true"]
    if supervisor == "systemd":
        lines += [
            f"systemctl disable {q(lay.unit)} >/dev/null 2>&1 || true",
            f"rm -f {q(lay.systemd_unit)}",
            "systemctl daemon-reload || true",
        ]
    elif supervisor == "cron":
        tag = q(CRON_TAG + lay.name)
        lines.append(
            f"if crontab -l 2>/dev/null | grep -qF {tag}; then crontab -l | grep -vF {tag} | crontab -; fi"
        )
    else:
        lines += [
            f"(update-rc.d -f {q(lay.unit)} remove || chkconfig --del {q(lay.unit)}) >/dev/null 2>&1 || true",
            f"rm -f {q(lay.initd)}",
        ]
    lines += [
        f"ip link del {q(bridge)} 2>/dev/null || true",
        f"nft delete table ip {q(nft_table)} 2>/dev/null || true",
        f"nft delete table inet {GUARD_TABLE} 2>/dev/null || true",
        f"rm -rf {q(lay.code)} {q(lay.state)} {q(lay.run)} {q(lay.log)} {q(lay.log)}.1",
        "rmdir /opt/pymachine-remote /var/lib/pymachine-remote /run/pymachine-remote 2>/dev/null || true",
    ]
    return "\n".join(lines)
