"""packaging/install.sh on a pristine Debian 12 root with Debian's own python3 (PEP 668, no pip, no
procps), as a new user meets it: it must install the package into its own venv, put the commands on PATH,
install what the test tiers need, leave no unasked service enabled, survive a second run, and give a
non-root user the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.pristine_root import MISSING, PristineRoot, pristine_root

pytestmark = [pytest.mark.timeout(2400), pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

# Services a package enables on install that nobody asked for (install.sh disables them).
UNASKED = ("ssh.service", "ssh.socket", "docker.service", "docker.socket", "containerd.service",
           "docker-registry.service")  # fmt: skip


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[PristineRoot, str]]:
    with pristine_root() as root:
        # Debian's interpreter is what the install meets, and it refuses pip (PEP 668) and has no venv module.
        assert root.run("/usr/bin/python3 -m pip --version").returncode != 0
        # No service manager here: libvirtd is started in test_services_without_a_service_manager, isolated.
        yield root, root.must("PYMACHINE_NO_SERVICES=1 packaging/install.sh")


def test_the_package_lives_in_its_own_venv_on_debians_python(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    out = root.must(
        "readlink -f /opt/pymachine/bin/python;"
        " readlink /usr/local/bin/pymachine /usr/local/bin/pymachine-gui; command -v pymachine;"
        " /opt/pymachine/bin/python -c 'import libvirt; print(libvirt.__file__)'"
    )
    assert out.split() == [
        "/usr/bin/python3.11",
        "/opt/pymachine/bin/pymachine",
        "/opt/pymachine/bin/pymachine-gui",
        "/usr/local/bin/pymachine",
        "/usr/lib/python3/dist-packages/libvirt.py",  # Debian's python3-libvirt serves: nothing compiled
    ]
    # The system interpreter stays as Debian shipped it (nothing pip-installed into it).
    assert root.run("/usr/bin/python3 -c 'import pymachine'").returncode != 0


def test_version_and_doctor_run(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    version = root.run("pymachine version")
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout
    doctor = root.run("pymachine doctor")
    # Nothing runs libvirtd here and no image is built, so doctor may report failures (exit 1); it must
    # report, not crash.
    assert doctor.returncode in (0, 1), doctor.stderr
    assert "Traceback" not in doctor.stderr
    assert "[ok  ] qemu-system-x86_64" in doctor.stdout
    assert "libvirt" in doctor.stdout


def test_gui_imports_and_desktop_entry(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    root.must(
        "QT_QPA_PLATFORM=offscreen /opt/pymachine/bin/python -c"
        " 'from PySide6.QtWidgets import QApplication; QApplication([])'"
    )
    root.must(
        "test -f /usr/local/share/applications/pymachine.desktop"
        " && test -f /usr/local/share/icons/hicolor/scalable/apps/pymachine.svg"
    )


def test_test_tier_tools_and_no_unasked_service(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    root.must("command -v sshd docker pgrep Xvfb mmdebstrap qemu-img skopeo")
    enabled = root.must("ls /etc/systemd/system/*.wants/ 2>/dev/null || true").split()
    assert not set(UNASKED) & set(enabled), enabled
    root.must("test ! -e /usr/sbin/policy-rc.d")  # the guard that kept services from starting is gone again


def test_second_run_is_harmless(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    out = root.must("PYMACHINE_NO_SERVICES=1 packaging/install.sh")
    assert "installing system packages" not in out
    assert "creating the virtual environment" not in out
    root.must("pymachine --help >/dev/null")


def test_a_failure_stops_with_the_real_error(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    result = root.run(
        "PYMACHINE_NO_SERVICES=1 PYMACHINE_PREFIX=/opt/other PYMACHINE_PYTHON=/usr/bin/python9"
        " packaging/install.sh"
    )
    assert result.returncode != 0
    assert "/usr/bin/python9" in result.stderr
    assert "ready" not in result.stdout


def test_services_without_a_service_manager(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    # Twice, as CI and install.sh both call it: the second run must find the daemons and leave them alone.
    # libvirtd runs below the subreaper (Debian's python3), which reaps the QEMU processes it double-forks
    out = root.must(
        "packaging/services.sh libvirtd && packaging/services.sh libvirtd"
        " && virsh -c qemu:///system uri"
        " && grep -lx -e virtlogd -e libvirtd /proc/[0-9]*/comm | wc -l"
        " && tr '\\0' ' ' </proc/$(awk '/^PPid/ {print $2}' /proc/$(cat /run/libvirtd.pid)/status)/cmdline",
        isolated=True,
    )
    assert out.split()[:2] == ["qemu:///system", "2"]
    assert "packaging/subreaper.py libvirtd -d" in out, out


def test_per_user_install(installed: tuple[PristineRoot, str]) -> None:
    root, _ = installed
    root.must("useradd --create-home pmuser && cp -r /src/pymachine ~pmuser/src && chown -R pmuser: ~pmuser")
    root.must("cd ~/src && packaging/install.sh", user="pmuser")
    out = root.must(
        "readlink ~/.local/bin/pymachine && ~/.local/bin/pymachine version"
        " && test -f ~/.local/share/applications/pymachine.desktop",
        user="pmuser",
    )
    assert out.splitlines()[0] == "/home/pmuser/.local/share/pymachine/venv/bin/pymachine"
    assert "0.1.0" in out
