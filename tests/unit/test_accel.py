"""The accelerator decision as a pure function of host facts, and the per-host cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pymachine.hostvm import accel
from pymachine.hostvm.accel import HostFacts, decide

GOOD_KVM = HostFacts(
    "linux", ("tcg", "kvm"), kvm_device=True, kvm_access=True, kvm_modules=("kvm_intel",),
    cpu_virt_flags=("vmx",), kvm_api_ok=True,
)  # fmt: skip


def test_working_kvm_is_used() -> None:
    choice = decide(GOOD_KVM)
    assert choice.name == "kvm" and choice.domain_type == "kvm"
    assert choice.qemu_args == ("-accel", "kvm", "-cpu", "host")
    assert "\n" not in choice.reason


def test_kvm_pvm_falls_back_to_tcg_with_a_readable_reason() -> None:
    # This machine: /dev/kvm works at the ioctl level but is the nested PVM module without vmx/svm.
    facts = HostFacts("linux", ("tcg", "kvm"), True, True, ("kvm_pvm",), (), True)
    choice = decide(facts)
    assert choice.name == "tcg" and choice.domain_type == "qemu"
    assert "kvm_pvm" in choice.reason
    assert choice.qemu_args == ("-accel", "tcg,thread=multi,tb-size=64", "-cpu", "max")
    assert choice.describe().startswith("accelerator: tcg (")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"kvm_device": False}, "no /dev/kvm"),
        ({"cpu_virt_flags": ()}, "no vmx/svm"),
        ({"kvm_access": False}, "not accessible"),
        ({"kvm_api_ok": False, "kvm_error": "ioctl: Invalid argument"}, "ioctl: Invalid argument"),
        ({"qemu_accels": ("tcg",)}, "without KVM"),
    ],
)
def test_each_missing_piece_chooses_tcg(change: dict[str, object], words: str) -> None:
    facts = HostFacts(**{**GOOD_KVM.__dict__, **change})  # type: ignore[arg-type]
    choice = decide(facts)
    assert choice.name == "tcg"
    assert words in choice.reason


def test_macos_uses_hvf_when_supported() -> None:
    assert decide(HostFacts("darwin", ("tcg", "hvf"), hvf_supported=True)).name == "hvf"
    assert decide(HostFacts("darwin", ("tcg",), hvf_supported=True)).name == "tcg"
    assert decide(HostFacts("darwin", ("tcg", "hvf"), hvf_supported=False)).name == "tcg"


def test_windows_uses_whpx_when_available() -> None:
    assert decide(HostFacts("win32", ("tcg", "whpx"))).name == "whpx"
    assert decide(HostFacts("win32", ("tcg",))).name == "tcg"


def test_forced_accelerator_wins() -> None:
    assert decide(HostFacts("linux", forced="tcg")).name == "tcg"
    assert decide(HostFacts("linux", forced="kvm")).domain_type == "kvm"


def test_probe_caches_per_host_and_refreshes_on_key_change(
    pymachine_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYMACHINE_CACHE", str(pymachine_home / "cache"))
    monkeypatch.delenv("PYMACHINE_ACCEL", raising=False)
    calls: list[int] = []

    def facts() -> HostFacts:
        calls.append(1)
        return HostFacts("linux", ("tcg", "kvm"), True, True, ("kvm_pvm",), (), True)

    monkeypatch.setattr(accel, "gather_facts", facts)
    monkeypatch.setattr(accel, "_cache_key", lambda: "Linux 6.1 | QEMU 7.2")
    first = accel.probe()
    assert first.name == "tcg" and len(calls) == 1
    assert accel.probe() == first and len(calls) == 1  # served from the cache file
    stored = json.loads((pymachine_home / "cache" / "accel.json").read_text())
    assert stored["key"] == "Linux 6.1 | QEMU 7.2" and stored["facts"]["kvm_modules"] == ["kvm_pvm"]
    monkeypatch.setattr(accel, "_cache_key", lambda: "Linux 6.2 | QEMU 7.2")  # kernel upgrade
    accel.probe()
    assert len(calls) == 2
    accel.probe(refresh=True)
    assert len(calls) == 3


def test_env_override_skips_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMACHINE_ACCEL", "tcg")
    monkeypatch.setattr(accel, "gather_facts", lambda: pytest.fail("must not probe"))
    assert accel.probe().reason == "forced by PYMACHINE_ACCEL=tcg"


def test_facts_of_this_host_are_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("PYMACHINE_ACCEL", raising=False)
    facts = accel.gather_facts()
    choice = decide(facts)
    assert choice.name in ("kvm", "hvf", "whpx", "tcg")
    if facts.system == "linux":
        assert facts.kvm_device == os.path.exists("/dev/kvm")
        assert ("kvm_pvm" in facts.kvm_modules) == os.path.isdir("/sys/module/kvm_pvm")
        if "kvm_pvm" in facts.kvm_modules:  # this development/CI machine: KVM cannot boot our kernel
            assert choice.name == "tcg" and "kvm_pvm" in choice.reason
