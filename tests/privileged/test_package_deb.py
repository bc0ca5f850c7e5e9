"""The wheel and the .deb (packaging/linux/build-deb.sh), built from this checkout: the .deb installs with
`apt install ./pymachine_*.deb` into a pristine Debian 12 root, its commands and its GUI work there, and it
removes cleanly."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.pristine_root import MISSING, REPO, PristineRoot, pristine_root

pytestmark = [
    pytest.mark.timeout(2400),
    pytest.mark.skipif(MISSING is not None, reason=str(MISSING)),
    pytest.mark.skipif(
        not Path("/usr/bin/python3").exists() or not shutil.which("dpkg-deb"), reason="not Debian"
    ),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [str(REPO / "packaging/linux/build-deb.sh"), str(out)], check=True, capture_output=True, timeout=1800
    )
    (wheel,) = out.glob("pymachine-*.whl")
    (deb,) = out.glob("pymachine_*.deb")
    return wheel, deb


def test_wheel_carries_the_guest_recipes_agent_and_both_commands(built: tuple[Path, Path]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "pymachine/hostvm/machines.py" in names
    assert "pymachine/app/gui/main.py" in names
    assert any(n.startswith("pymachine/images/guest/") for n in names)  # the host builds the guest image
    assert any(n.startswith("pymachine_agent/") and n.endswith(".json") for n in names)
    assert "pymachine = pymachine.app.cli.main:main" in entry_points
    assert "pymachine-gui = pymachine.app.gui.main:main" in entry_points


@pytest.fixture(scope="module")
def deb_root(built: tuple[Path, Path]) -> Iterator[PristineRoot]:
    _, deb = built
    with pristine_root() as root:
        shutil.copy(deb, root.root / "tmp")
        # Packages must not start daemons inside a chroot (Debian's way for chroots and image builds)
        root.must(
            "printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d"
        )
        root.must(f"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt install -y -q /tmp/{deb.name}")
        yield root


def test_deb_installs_and_runs(deb_root: PristineRoot) -> None:
    out = deb_root.must("readlink /usr/bin/pymachine && pymachine version")
    assert out.splitlines()[0] == "/opt/pymachine/bin/pymachine"
    assert "0.1.0" in out
    doctor = deb_root.run("pymachine doctor")
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr
    assert "[ok  ] qemu-img" in doctor.stdout
    # Debian's python3-libvirt through the venv's system site-packages; nothing pip-installed outside the venv
    deb_root.must("/opt/pymachine/bin/python -c 'import libvirt' && ! /usr/bin/python3 -c 'import pymachine'")


def test_deb_gui_renders_offscreen(deb_root: PristineRoot) -> None:
    deb_root.must("QT_QPA_PLATFORM=offscreen pymachine gui --screenshot /tmp/shots")
    shots = deb_root.must("ls /tmp/shots").split()
    assert shots and all(s.endswith(".png") for s in shots)


def test_deb_removes_cleanly(deb_root: PristineRoot) -> None:
    deb_root.must("pymachine --help >/dev/null")  # byte code written at runtime too, which prerm clears
    deb_root.must("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q pymachine")
    deb_root.must(
        "test ! -e /opt/pymachine && test ! -e /usr/bin/pymachine && ! dpkg -s pymachine 2>/dev/null"
    )
