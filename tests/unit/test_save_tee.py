"""The direct-QEMU driver's save pipe (drivers/qemu.py CrcTee): what QEMU writes reaches the file whole, and
the CRC-32 computed on the way is the file's, so `stop` needs no second pass over the state."""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path

import pytest

from pymachine.hostvm.drivers.qemu import CrcTee
from pymachine.hostvm.errors import PymachineError
from pymachine.hostvm.savestate import crc32_file


def test_the_bytes_reach_the_file_and_the_crc_is_the_files(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)  # several pipe-fulls, not a multiple of any buffer
    path = tmp_path / "state"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    tee = CrcTee(fd)
    writer = os.dup(tee.write_end)  # "QEMU's copy" (getfd duplicates it the same way)
    tee.handed_over()

    def qemu() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(writer, view[: 1 << 16]) :]
        os.close(writer)

    threading.Thread(target=qemu).start()
    crc = tee.result(timeout=30)
    tee.close()
    os.close(fd)
    assert path.read_bytes() == data
    assert crc == zlib.crc32(data) == crc32_file(path)


def test_a_stream_that_never_ends_is_an_error_not_a_hang(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "state", os.O_WRONLY | os.O_CREAT, 0o600)
    tee = CrcTee(fd)
    held = os.dup(tee.write_end)  # a QEMU that keeps the fd (a migrate that never started)
    tee.handed_over()
    with pytest.raises(PymachineError, match="did not end"):
        tee.result(timeout=0.3)
    os.close(held)
    tee.close()
    os.close(fd)
