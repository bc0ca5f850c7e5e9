"""Shares as the VM gets them: transport choice from capability flags, the domain XML and QEMU argv (golden),
the virtiofsd command, the seed's share list, and the CLI verbs' rendering."""

from __future__ import annotations

import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from unit.test_domain import SPEC, check_golden

from pymachine.app.cli import machine_cmd
from pymachine.hostvm import machines, seed, shares
from pymachine.hostvm.config import Share, build
from pymachine.hostvm.domain import ShareDevice, domain_xml, preallocated_for_restore
from pymachine.hostvm.drivers.base import Capabilities
from pymachine.hostvm.drivers.qemu import qemu_argv
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.share_hotplug import ShareChange

VIRTIOFS = ShareDevice("pm0", "/home/u", False, "virtiofs", "/home/u/m/dev/virtiofs/pm0.sock")
NINEP = ShareDevice("pm1", "/srv/data,x", True, "9p")
SHARED = replace(SPEC, shares=(VIRTIOFS, NINEP))
ALL = frozenset(shares.TRANSPORTS)
BASE = Capabilities(remote=False, graceful_shutdown=True, hostfwd_add=True)


@pytest.mark.parametrize(
    ("caps", "wanted", "expected"),
    [
        (replace(BASE, virtiofs=True, virtio_9p=True), "auto", "virtiofs"),
        (replace(BASE, virtio_9p=True), "auto", "9p"),
        (BASE, "auto", "sshfs"),
        (replace(BASE, virtiofs=True, virtio_9p=True), "9p", "9p"),
        (replace(BASE, virtiofs=True), "sshfs", "sshfs"),
    ],
)
def test_transport_follows_the_capability_flags(caps: Capabilities, wanted: str, expected: str) -> None:
    assert shares.choose_transport(caps, wanted, guest=ALL) == expected


def test_the_guest_kernel_without_9p_falls_back_to_sshfs() -> None:
    caps = replace(BASE, virtio_9p=True)
    assert shares.choose_transport(caps, "auto", guest=frozenset({"virtiofs", "sshfs"})) == "sshfs"
    with pytest.raises(UsageError, match="the guest image's kernel cannot share folders over 9p"):
        shares.choose_transport(caps, "9p", guest=frozenset({"virtiofs", "sshfs"}))


def test_a_transport_the_driver_cannot_do_is_refused_naming_what_it_can() -> None:
    with pytest.raises(UsageError) as err:
        shares.choose_transport(replace(BASE, virtio_9p=True), "virtiofs", guest=ALL)
    assert "cannot share folders over virtiofs" in err.value.message
    assert "9p, sshfs" in (err.value.hint or "")


def test_domain_xml_with_shares_golden() -> None:
    xml = domain_xml(SHARED)
    check_golden("domain-shares.xml", xml)
    assert "<source type='memfd'/>" in xml and "<access mode='shared'/>" in xml
    assert '<source socket="/home/u/m/dev/virtiofs/pm0.sock"/>' in xml


def test_no_shares_no_shared_memory() -> None:
    assert "memoryBacking" not in domain_xml(SPEC)
    assert "memory-backend-memfd" not in " ".join(qemu_argv(SPEC, "/p", "/q"))
    nine = replace(SPEC, shares=(NINEP,))  # 9p is served by QEMU: no shared memory needed
    assert "memoryBacking" not in domain_xml(nine)


def test_qemu_argv_with_shares_golden() -> None:
    argv = qemu_argv(SHARED, "/home/u/m/dev/qemu.pid", "/home/u/m/dev/qmp.sock")
    check_golden("qemu-shares.argv", "\n".join(argv) + "\n")
    assert "memory-backend-memfd,id=mem0,size=1024M,share=on" in argv
    assert "local,path=/srv/data,,x,mount_tag=pm1,security_model=mapped-xattr,id=pm1,readonly=on" in argv


def test_a_libvirt_restore_preallocates_shared_ram_and_nothing_else() -> None:
    """A restore into a shared memfd faults in every page of it one by one (domain.py says why): libvirt is
    asked to preallocate it then, and only then. Private RAM and a cold boot stay as they are."""
    saved = domain_xml(SHARED)
    xml = preallocated_for_restore(saved)
    assert xml != saved and "prealloc" not in saved and "<allocation" not in saved
    backing = ET.fromstring(xml).find("memoryBacking")
    assert backing is not None
    assert [c.tag for c in backing] == ["source", "access", "allocation"]
    assert backing.find("allocation").get("mode") == "immediate"  # type: ignore[union-attr]
    assert preallocated_for_restore(xml) == xml  # a state saved from a restored domain: said once
    assert preallocated_for_restore(domain_xml(SPEC)) == domain_xml(SPEC)  # no shared RAM: untouched


def test_virtiofsd_argv_per_owner(tmp_path: Path) -> None:
    dev = ShareDevice("pm0", str(tmp_path), True, "virtiofs", "/m/virtiofs/pm0.sock")
    as_root_for_root = shares.virtiofsd_argv(dev, "/v", owner=0, as_root=True)
    assert as_root_for_root[:2] == ["unshare", "--mount"] and "--user" not in as_root_for_root
    script = as_root_for_root[-1]
    assert f"mount -o remount,bind,ro {tmp_path} {tmp_path}" in script  # read-only on the host side
    tail = f"-o sandbox=namespace -o no_xattr --rlimit-nofile={shares.nofile_limit()}"
    cache = "-o cache=always -o timeout=30"
    assert script.endswith(f"--socket-path=/m/virtiofs/pm0.sock -o source={tmp_path} {cache} {tail}")
    squash = [sys.executable, "-m", "pymachine.hostvm.virtiofs_squash"]
    for_user = shares.virtiofsd_argv(dev, "/v", owner=1000, as_root=True)
    gid = tmp_path.stat().st_gid
    ns = ["unshare", "--map-user=1000", f"--map-group={gid}", "--keep-caps", "--mount"]
    assert for_user[:11] == [*squash, "--uid=1000", f"--gid={gid}", "--", *ns]
    not_root = shares.virtiofsd_argv(replace(dev, readonly=False), "/v", owner=0, as_root=False)
    me = [f"--map-user={os.getuid()}", f"--map-group={os.getgid()}", "--keep-caps"]
    assert not_root[:8] == [*squash, "--", "unshare", *me]
    assert "remount" not in not_root[-1]


def test_devices_number_the_tags_and_place_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMACHINE_HOME", str(tmp_path / "h"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg = build("dev", ncpus_host=2, fallback_driver="qemu", home_mount=False,
                mounts=[str(tmp_path / "a"), f"{tmp_path / 'b'}:ro"])  # fmt: skip
    devs = shares.devices(cfg, "virtiofs")
    assert [(d.tag, d.readonly) for d in devs] == [("pm0", False), ("pm1", True)]
    assert devs[1].socket == str(tmp_path / "h" / "m" / "dev" / "virtiofs" / "pm1.sock")
    assert all(d.socket == "" for d in shares.devices(cfg, "9p"))


def test_seed_carries_the_share_list() -> None:
    devs = [VIRTIOFS, replace(NINEP, transport="virtiofs", socket="/s")]
    data = seed.read_seed(
        seed.build_seed(
            "dev",
            "ssh-ed25519 AAAA k",
            b"key",
            "ssh-ed25519 BBBB h",
            agent_settings={"shares": [{"path": "/home/u", "readonly": False, "transport": "virtiofs"}]},
            mounts=shares.guest_entries(devs),
        )  # fmt: skip
    )
    mounts = json.loads(data["mounts.json"])
    assert mounts[0] == {"path": "/home/u", "readonly": False, "transport": "virtiofs", "tag": "pm0"}
    assert json.loads(data["agent.json"])["shares"][0]["path"] == "/home/u"
    assert "mounts.json" not in seed.read_seed(seed.build_seed("dev", "k", b"k", "k"))


def _machine(**kw: object) -> machines.Machine:
    base = dict(name="dev", state="running", cpus=2, memory=1 << 30, disk=8 << 30, ssh_port=1,
                accelerator="tcg", driver="qemu", uri="qemu", pid=1, dir="/m", console_log="/m/c",
                image="h")  # fmt: skip
    return machines.Machine(**{**base, **kw})  # type: ignore[arg-type]


def test_mount_list_marks_what_waits_for_a_restart(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    m = _machine(
        shares=[
            {"path": "/home/u", "readonly": False, "transport": "virtiofs", "pending": None},
            {"path": "/srv/x", "readonly": True, "transport": "virtiofs", "pending": "add"},
            {"path": "/srv/old", "readonly": False, "transport": "virtiofs", "pending": "remove"},
        ],
        share_problems=["virtiofsd pm0 exited"],
    )
    monkeypatch.setattr(machines, "get", lambda name: m)
    parser = argparse.ArgumentParser()
    machine_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["mount", "list", "dev"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["/home/u", "rw", "virtiofs"]
    assert lines[2].split() == ["/srv/x", "ro", "virtiofs", "(restart", "to", "apply)"]
    assert "(removed: restart to apply)" in lines[3]
    assert lines[4] == "warning: virtiofsd pm0 exited"


def test_mount_add_says_when_it_applies(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    machine_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["mount", "add", "dev", "/srv/x:ro"])
    for change, said in [
        (ShareChange("next start"), "applies at the next start"),
        (ShareChange("now"), "mounted in the VM now"),
        (ShareChange("restart"), "restart to apply: pymachine restart dev"),
        (
            ShareChange("restart", "no agent"),
            "not at once: no agent; restart to apply: pymachine restart dev",
        ),
    ]:
        monkeypatch.setattr(machines, "mount_add", lambda name, path, c=change: (_machine(), c))
        assert args.func(args) == 0
        assert capsys.readouterr().out == f"machine 'dev' shares /srv/x:ro ({said})\n"


def test_share_list_pending_against_the_running_start() -> None:
    cfg = build("dev", ncpus_host=2, fallback_driver="qemu", home_mount=False)
    cfg.shares = [Share("/a"), Share("/b", True)]
    drv = argparse.Namespace(capabilities=replace(BASE, virtiofs=True, virtio_9p=True))
    started = {
        "share_transport": "9p",
        "shares": [{"path": "/a", "readonly": False}, {"path": "/c", "readonly": False}],
    }
    got = machines.share_list(cfg, started, True, drv)  # type: ignore[arg-type]
    assert [(s["path"], s["transport"], s["pending"]) for s in got] == [
        ("/a", "9p", None), ("/b", "9p", "add"), ("/c", "9p", "remove")
    ]  # fmt: skip
    stopped = machines.share_list(cfg, started, False, drv)  # type: ignore[arg-type]
    assert {s["transport"] for s in stopped} == {"virtiofs"} and not any(s["pending"] for s in stopped)


def test_start_reports_each_share_the_guest_could_not_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    failed = "[Errno 19] mount 9p on /b: No such device"
    entries = [{"path": "/a", "error": None}, {"path": "/b", "error": failed}]
    expected = [f"share /b is not mounted in the VM: {failed}"]

    def no_exec(client, cmd, timeout=60):  # type: ignore[no-untyped-def]
        raise AssertionError("the agent gave the report: nothing to exec in the guest")

    # the guest agent serves the init's report (GET /pymachine/v1/shares)
    monkeypatch.setattr(machines, "_agent_share_report", lambda client: entries)
    monkeypatch.setattr(machines.ssh, "exec_command", no_exec)
    assert machines._guest_share_problems(object()) == expected
    # an agent older than this host's: the report is read with a cat over SSH
    monkeypatch.setattr(machines, "_agent_share_report", lambda client: None)
    report = json.dumps(entries).encode()
    monkeypatch.setattr(machines.ssh, "exec_command", lambda client, cmd, timeout=60: (0, report, b""))
    assert machines._guest_share_problems(object()) == expected
    monkeypatch.setattr(machines.ssh, "exec_command", lambda client, cmd, timeout=60: (1, b"", b""))
    assert machines._guest_share_problems(object()) == []  # an older guest writes no report


def test_the_agent_share_report_needs_a_transport_that_reaches_its_socket() -> None:
    class NoTransport:
        def get_transport(self) -> None:
            return None

    assert machines._agent_share_report(NoTransport()) is None  # then the cat
