"""A tiny container root filesystem for runtime tests: the host's static busybox plus its applet symlinks,
/etc/passwd and /etc/group with a non-root user, built once per session into a folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app user:/home/app:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
"""


def is_static(path: str) -> bool:
    out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout
    return "statically linked" in out or "static-pie" in out


def build_busybox_rootfs(dest: Path) -> Path:
    """Create `dest` as a busybox root (one layer). Returns dest."""
    if not os.path.exists(BUSYBOX):
        raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home/app", "tmp", "proc", "sys", "dev",
              "var"):  # fmt: skip
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    os.chown(dest / "home/app", 1000, 1000)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout
    for rel in applets.split():
        link = dest / rel
        if rel == "bin/busybox" or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    (dest / "etc/lower-marker").write_text("from the image\n")
    return dest
