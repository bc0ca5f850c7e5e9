"""The pure parts of the device allowlist: rule parsing and merging, the eBPF program's layout, and the
mapping of HostConfig.Devices / DeviceCgroupRules into the spec. The program itself runs in the privileged
tier."""

from __future__ import annotations

import struct

import pytest

from pymachine_agent.dockerspec import BadParameter, translate_create
from pymachine_agent.runtime import devices
from pymachine_agent.runtime.devices import WILDCARD, Rule
from pymachine_agent.runtime.spec import ContainerSpec, DeviceMapping

IMAGE = {"Id": "sha256:" + "cd" * 32, "config": {"Cmd": ["sh"]}}


def _create(hc: dict) -> ContainerSpec:
    return translate_create("ab" * 32, "c", {"Image": "x", "HostConfig": hc}, IMAGE, ["/l"], lambda n: n).spec


def test_parse_rule_takes_dockerds_format_only() -> None:
    assert devices.parse_rule("c 1:3 rwm") == Rule("c", 1, 3, "rwm")
    assert devices.parse_rule("b *:* m") == Rule("b", WILDCARD, WILDCARD, "m")
    assert devices.parse_rule("a 7:* r") == Rule("a", 7, WILDCARD, "r")
    for bad in ("c 1:3", "x 1:3 rwm", "c 1:3 rx", "c -1:3 r", " c 1:3 r", "c 1:3 rwmr"):
        with pytest.raises(ValueError, match="invalid device cgroup format"):
            devices.parse_rule(bad)


def test_rules_for_one_device_are_merged_and_type_a_allows_everything() -> None:
    merged = devices.merge([Rule("c", 1, 3, "r"), Rule("c", 1, 3, "w"), Rule("b", 1, 3, "m")])
    assert merged == [Rule("c", 1, 3, "rw"), Rule("b", 1, 3, "m")]
    assert devices.merge([Rule("c", 1, 3, "r"), Rule("a", 5, 5, "r")]) == [
        Rule("a", WILDCARD, WILDCARD, "rwm")
    ]


def test_the_program_checks_each_field_and_ends_in_deny() -> None:
    insns = devices.program([Rule("c", 10, 229, "r")])
    words = [struct.unpack("<BBhi", insns[i : i + 8]) for i in range(0, len(insns), 8)]
    codes = [w[0] for w in words]
    assert codes[:6] == [
        devices.LDXW,
        devices.AND32_K,
        devices.LDXW,
        devices.RSH32_K,
        devices.LDXW,
        devices.LDXW,
    ]
    block = words[6:-2]
    # type, access (3 insns), major, minor, then return 1; every jump lands just past the block
    assert [w[0] for w in block] == [
        devices.JNE_K, devices.MOV32_X, devices.AND32_K, devices.JNE_X, devices.JNE_K, devices.JNE_K,
        devices.MOV32_K, devices.EXIT,
    ]  # fmt: skip
    for i, (code, _, off, _) in enumerate(block):
        if code in (devices.JNE_K, devices.JNE_X):
            assert i + 1 + off == len(block)
    assert block[0][3] == devices.DEV_CHAR and block[2][3] == devices.ACC_READ
    assert (block[4][3], block[5][3], block[6][3]) == (10, 229, 1)
    assert words[-2][0] == devices.MOV32_K and words[-2][3] == 0 and words[-1][0] == devices.EXIT
    # a wildcard rwm rule of both types checks nothing: allow all
    assert len(devices.program([Rule("a", WILDCARD, WILDCARD, "rwm")])) // 8 == 6 + 2 + 2


def test_docker_defaults_match_moby_and_runc() -> None:
    allowed = {(r.type, r.major, r.minor) for r in devices.DEFAULT_RULES if "r" in r.access}
    assert allowed == {("c", 1, n) for n in (3, 5, 7, 8, 9)} | {
        ("c", 5, 0), ("c", 5, 1), ("c", 5, 2), ("c", 136, WILDCARD), ("c", 10, 200),
    }  # fmt: skip
    assert {r for r in devices.DEFAULT_RULES if r.access == "m"} == {
        Rule("c", WILDCARD, WILDCARD, "m"),
        Rule("b", WILDCARD, WILDCARD, "m"),
    }
    assert not any(r.major == 10 and r.minor == 229 for r in devices.DEFAULT_RULES)  # fuse only with --device


def test_host_config_devices_map_into_the_spec_and_round_trip() -> None:
    spec = _create(
        {
            "Devices": [
                {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"},
                {"PathOnHost": "/dev/net/tun", "PathInContainer": "", "CgroupPermissions": "r"},
            ],
            "DeviceCgroupRules": ["c 10:229 rw"],
        }
    )
    assert spec.devices == [
        DeviceMapping("/dev/fuse", "/dev/fuse", "rwm"),
        DeviceMapping("/dev/net/tun", "/dev/net/tun", "r"),
    ]
    assert spec.device_cgroup_rules == ["c 10:229 rw"]
    assert ContainerSpec.from_json(spec.to_json()).devices == spec.devices
    assert _create({}).devices == [] and _create({}).extra["docker"]["HostConfig"]["Devices"] == []


@pytest.mark.parametrize(
    "hc, message",
    [
        ({"DeviceCgroupRules": ["c 1:3 rwx"]}, "invalid device cgroup format 'c 1:3 rwx'"),
        ({"Devices": [{"PathOnHost": "dev/fuse", "PathInContainer": "/dev/fuse"}]}, "bad format for path"),
        ({"Devices": [{"PathOnHost": "/dev/fuse", "CgroupPermissions": "rwx"}]}, "invalid device mode: rwx"),
    ],
)
def test_malformed_device_requests_are_400s(hc: dict, message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        _create(hc)


def test_a_missing_device_gets_dockerds_message() -> None:
    with pytest.raises(OSError, match='adding custom device "/dev/no-such-node": no such file or directory'):
        devices.resolve("/dev/no-such-node", "", "rwm")
    found = devices.resolve("/dev/null", "/dev/other", "r")
    assert [(d.path, d.type, d.major, d.minor, d.permissions) for d in found] == [
        ("/dev/other", "c", 1, 3, "r")
    ]
