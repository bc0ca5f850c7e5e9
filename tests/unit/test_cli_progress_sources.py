"""Where typed progress comes from: a long subprocess seen line by line (proc.run's on_line, with its timeout)
and mmdebstrap's lines turned into what the guest image build is doing."""

from __future__ import annotations

import pytest

from pymachine.hostvm import proc
from pymachine.hostvm.errors import PymachineError
from pymachine.hostvm.image_build import mmdebstrap_note
from pymachine.hostvm.progress import StepNote

pytestmark = pytest.mark.unit


def test_on_line_sees_stdout_and_stderr_as_they_come(tmp_path) -> None:
    seen: list[str] = []
    log = tmp_path / "log"
    result = proc.run(["sh", "-c", "echo one; echo two >&2; echo three"], on_line=seen.append, log_path=log)
    assert seen == ["one", "two", "three"]
    assert result.returncode == 0 and b"two" in result.stderr
    assert "two" in log.read_text()


def test_on_line_failure_and_timeout_keep_the_error_shape() -> None:
    with pytest.raises(PymachineError, match="exit status 3: boom"):
        proc.run(["sh", "-c", "echo boom >&2; exit 3"], on_line=lambda _l: None)
    with pytest.raises(PymachineError, match="did not finish within 1 s"):
        proc.run(["sleep", "30"], on_line=lambda _l: None, timeout=1)


@pytest.mark.parametrize(
    ("line", "note"),
    [
        ("I: running apt-get update...", StepNote("rootfs", "running apt-get update...")),
        (
            "Get:12 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 2.36-9+deb12u4 [2757 kB]",
            StepNote("rootfs", "downloading libc6"),
        ),
        ("Unpacking libc6:amd64 (2.36-9+deb12u4) ...", StepNote("rootfs", "unpacking libc6")),
        ("Setting up base-files (12.4+deb12u5) ...", StepNote("rootfs", "setting up base-files")),
        ("Preparing to unpack .../libc6_2.36-9_amd64.deb ...", None),
        ("", None),
    ],
)
def test_mmdebstrap_lines(line: str, note: StepNote | None) -> None:
    assert mmdebstrap_note(line) == note
