import pytest

from pymachine_agent.network import ports
from pymachine_agent.network.model import InvalidParameterError, PortClashError, PortSpec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [PortSpec(80, "tcp", 0, "")]),
        ("8080:80", [PortSpec(80, "tcp", 8080, "")]),
        ("8080:80/udp", [PortSpec(80, "udp", 8080, "")]),
        ("127.0.0.1:8080:80/TCP", [PortSpec(80, "tcp", 8080, "127.0.0.1")]),
        ("127.0.0.1::80", [PortSpec(80, "tcp", 0, "127.0.0.1")]),
        ("8000-8001:80-81", [PortSpec(80, "tcp", 8000, ""), PortSpec(81, "tcp", 8001, "")]),
        ("53-54/udp", [PortSpec(53, "udp", 0, ""), PortSpec(54, "udp", 0, "")]),
    ],
)
def test_parse_publish(spec, expected):
    assert ports.parse_publish(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "0", "70000", "80/sctp", "a:b", "1:2:3:4", "8000-8002:80-81", "[::1]:80:80", "300.1.1.1:1:1"]
)
def test_parse_publish_rejects(spec):
    with pytest.raises(InvalidParameterError):
        ports.parse_publish(spec)


def test_port_key():
    assert PortSpec(53, "udp").key == "53/udp"


def test_from_port_bindings_and_publish_all():
    specs = ports.from_port_bindings(
        {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": ""}],
            "53/udp": None,
        },
        exposed=["80/tcp", "443/tcp", "53/udp", "9000"],
        publish_all=True,
    )
    assert specs == [
        PortSpec(80, "tcp", 8080, ""),
        PortSpec(80, "tcp", 0, "127.0.0.1"),
        PortSpec(53, "udp", 0, ""),
        PortSpec(443, "tcp", 0, ""),
        PortSpec(9000, "tcp", 0, ""),
    ]
    assert ports.from_port_bindings(None, ["80/tcp"], publish_all=False) == []


def test_check_specs_names_the_clashing_port_and_owner():
    ports.check_specs([PortSpec(80, "tcp", 8080), PortSpec(80, "udp", 8080), PortSpec(81)], {})
    with pytest.raises(PortClashError, match="8080/tcp is published twice"):
        ports.check_specs([PortSpec(80, "tcp", 8080), PortSpec(81, "tcp", 8080)], {})
    with pytest.raises(PortClashError, match=r"port 8080/tcp is already allocated .*abcdefabcdef") as info:
        ports.check_specs([PortSpec(80, "tcp", 8080)], {("tcp", 8080): "abcdefabcdef0123"})
    assert info.value.host_port == 8080 and info.value.proto == "tcp"
