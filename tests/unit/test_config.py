"""Machine config: parse → defaults → validate, every problem reported with its field."""

from __future__ import annotations

import pytest

from pymachine.hostvm import config
from pymachine.hostvm.config import GiB, MiB, build, format_size, parse_size
from pymachine.hostvm.errors import UsageError

HOST = dict(ncpus_host=2, fallback_driver="libvirt")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2G", 2 * GiB),
        ("512M", 512 * MiB),
        ("1k", 1024),
        ("1.5GiB", 3 * GiB // 2),
        ("4096", 4096),
        ("1gb", GiB),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "2X", "-1G", "1 2G", "two"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_format_size_round_trips() -> None:
    for n in (GiB, 512 * MiB, 3 * GiB // 2, 1000):
        assert parse_size(format_size(n)) == n


def test_defaults() -> None:
    cfg = build(**HOST)
    assert (cfg.name, cfg.cpus, cfg.memory, cfg.disk, cfg.driver, cfg.connect) == (
        "default",
        2,
        GiB,
        8 * GiB,
        "libvirt",
        None,
    )


def test_default_cpus_never_exceed_host() -> None:
    assert build(ncpus_host=1, fallback_driver="qemu").cpus == 1


def test_default_disk_grows_to_the_image() -> None:
    assert build(**HOST, image_bytes=10 * GiB + 1).disk == 10 * GiB + MiB


def test_every_problem_is_reported_with_its_field() -> None:
    with pytest.raises(UsageError) as info:
        build("Bad_Name", cpus=3, memory="1k", disk="lots", driver="vbox", **HOST)
    message = info.value.message
    assert "name: 'Bad_Name' must be" in message
    assert "cpus: must be between 1 and 2" in message
    assert "memory: must be at least 256M, got 1K" in message
    assert "disk: 'lots' is not a size" in message
    assert "driver: 'vbox' is not one of libvirt, qemu" in message
    assert info.value.exit_code == 2
    assert info.value.hint


@pytest.mark.parametrize("name", ["a", "dev-1", "0abc", "a" * 31])
def test_valid_names(name: str) -> None:
    assert build(name, **HOST).name == name


@pytest.mark.parametrize("name", ["", "-a", "A", "a_b", "a" * 32, "a/b", "../x", "a.b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(UsageError, match="name: "):
        build(name, **HOST)


def test_cpus_must_be_a_number_and_at_least_one() -> None:
    with pytest.raises(UsageError, match="cpus: 'x' is not a whole number"):
        build(cpus="x", **HOST)
    with pytest.raises(UsageError, match="cpus: must be between 1 and 2"):
        build(cpus=0, **HOST)


def test_disk_smaller_than_image_refused() -> None:
    with pytest.raises(UsageError, match="disk: must be at least the image's size 2G"):
        build(disk="1G", image_bytes=2 * GiB, **HOST)


def test_connect_needs_libvirt() -> None:
    with pytest.raises(UsageError, match="connect: a libvirt URI only applies"):
        build(driver="qemu", connect="qemu:///system", **HOST)
    assert build(connect="qemu+ssh://h/system", **HOST).connect == "qemu+ssh://h/system"


def test_json_round_trip_ignores_unknown_keys() -> None:
    cfg = build("x", memory="2G", **HOST)
    cfg.image = {"kernel": "/k"}
    data = cfg.to_json() | {"future_field": 1}
    assert config.MachineConfig.from_json(data) == cfg
