"""The GUI's small pure pieces: uptime text, port links, exec frame demux, field errors from the validator."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from pymachine.app.gui.common import uptime
from pymachine.app.gui.containers_panel import port_links
from pymachine.app.gui.create_dialog import field_problems
from pymachine.hostvm import config as cfgmod
from pymachine.hostvm.errors import UsageError
from pymachine.hostvm.images_io import demux
from pymachine.hostvm.units import binary_size, human_size


def test_uptime_from_engine_timestamps() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    # the words of `docker ps` (go-units' HumanDuration), the same function the CLI uses
    assert uptime("2026-01-01T11:59:30.123456789Z", now) == "29 seconds"  # whole seconds, rounded down
    assert uptime("2026-01-01T11:55:00Z", now) == "5 minutes"
    assert uptime("2026-01-01T09:30:00.5Z", now) == "2 hours"
    assert uptime("2025-12-29T12:00:00Z", now) == "3 days"
    assert uptime("0001-01-01T00:00:00Z", now) == "" and uptime("", now) == ""


def test_sizes() -> None:
    assert human_size(2_048_000) == "2.05MB" and human_size(512) == "512B"  # as `docker images`
    assert binary_size(512 * 1024**2) == "512 MiB" and binary_size(3 * 1024**3 // 2) == "1.5 GiB"


def test_port_links_only_reachable_tcp_on_localhost() -> None:
    attrs = {
        "Name": "/web",
        "NetworkSettings": {
            "Ports": {
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
                "443/tcp": [{"HostIp": "192.0.2.7", "HostPort": "8443"}],
                "9000/tcp": None,
            }
        },
    }
    assert port_links(attrs) == [("localhost:8080 → web:80", "http://localhost:8080/")]


def test_demux_keeps_a_partial_frame_for_later() -> None:
    frame = lambda stream, data: bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data  # noqa: E731
    buf = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"partial")[:10]
    frames, rest = demux(buf)
    assert frames == [(1, b"out\n"), (2, b"err\n")]
    frames, rest = demux(rest + frame(1, b"partial")[10:])
    assert frames == [(1, b"partial")] and rest == b""


def test_field_problems_from_the_real_validator() -> None:
    with pytest.raises(UsageError) as info:
        cfgmod.build(
            name="-x",
            cpus="two",
            memory="1G",
            disk="1.5.5G",
            driver="vbox",
            ncpus_host=2,
            fallback_driver="qemu",
        )
    assert {f for f, _ in info.value.problems} == {"name", "cpus", "disk", "driver"}
    problems = field_problems(info.value)
    assert set(problems) == {"name", "cpus", "disk", "driver"}
    assert "not a whole number" in problems["cpus"] and "is not a size" in problems["disk"]
    assert "not one of libvirt, qemu" in problems["driver"]
