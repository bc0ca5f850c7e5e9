"""A pristine Debian 12 root (mmdebstrap minbase + Debian's python3) to prove installs the way a new user
meets them: Debian's own interpreter under PEP 668, no pip, no procps, no sshd.

The root tarball is cached outside the repo, keyed by the hash of its recipe. Each `PristineRoot` unpacks a
fresh copy; every command runs in a private mount namespace (proc, sys, dev and the download caches mounted in
it), so nothing stays mounted on the host when a command ends, however it ends. No systemd runs inside.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from support import SHARED_CACHE

REPO = Path(__file__).resolve().parents[2]
# Debian's mirror as this host's apt knows it (the machine reaches no other public address).
RECIPE = {"suite": "bookworm", "variant": "minbase", "include": ["python3"], "mirror": "default"}
HOST_CA = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
ROOT_CA = "/etc/host-ca.crt"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The device nodes a root gets (bound from the host's /dev, which is not mounted there as a whole).
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# Not copied into the root: history, build output, and state an editable install leaves in a checkout.
IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
)


# For the tests' skipif: a machine without mmdebstrap (packaging/install.sh installs it) cannot make the root.
MISSING = (
    None if shutil.which("mmdebstrap") else "mmdebstrap is not installed (packaging/install.sh installs it)"
)


def recipe_key() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def base_tarball(cache: Path = SHARED_CACHE) -> Path:
    """The recipe's root as a tarball, built once per recipe (about 30 s) and shared by every run."""
    folder = cache / "pristine-root"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{RECIPE['suite']}-{recipe_key()}.tar"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs building the same root wait for one another
        if not out.exists():
            part = out.with_suffix(".part")
            argv = [
                "mmdebstrap", f"--variant={RECIPE['variant']}", "--mode=root", "--format=tar",
                "--include=" + ",".join(RECIPE["include"]), RECIPE["suite"], str(part),
            ]  # fmt: skip
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=900)
            part.rename(out)
    return out


class PristineRoot:
    """A fresh unpacked root with this checkout copied to /src/pymachine."""

    def __init__(self, root: Path, cache: Path = SHARED_CACHE) -> None:
        self.root = root
        # Downloads are kept between runs (apt's .debs, pip's wheels): the install is what is proved, not the
        # mirror's speed. The caches hold packages only; nothing installed leaks from one root into another.
        # apt's cache is not mounted into the root but linked file by file (debs are written once, under a
        # new name): apt locks its archives folder and fails at once when another apt holds it, so two runs
        # on this host sharing the folder (CI beside an engineer's run) failed test_install_pristine and
        # test_package_deb with "Could not get lock .../archives/lock".
        self.apt_cache = cache / "pristine-root" / "apt-archives"
        self.pip_cache = cache / "pristine-root" / "pip"
        self.src = "/src/pymachine"

    def prepare(self) -> None:
        subprocess.run(["tar", "-xf", str(base_tarball()), "-C", str(self.root)], check=True)
        shutil.copy("/etc/resolv.conf", self.root / "etc/resolv.conf")
        # This host reaches PyPI through an inspecting proxy whose CA only the host's bundle holds; pip (which
        # trusts its own certifi, not the system store) is pointed at a copy. A user's machine needs neither.
        if Path(HOST_CA).exists():
            shutil.copy(HOST_CA, self.root / ROOT_CA.lstrip("/"))
        # Only a checkout is copied: a copy of tests/ run from elsewhere once resolved REPO to /tmp and copied
        # 33 GB of other runs' files into the root (the disk filled).
        if not (REPO / "pyproject.toml").is_file() or not (REPO / "hostvm").is_dir():
            raise RuntimeError(f"{REPO} is not a pymachine checkout: run the tests from one")
        shutil.copytree(REPO, self.root / self.src.lstrip("/"), ignore=IGNORE, symlinks=True)
        # dpkg without an fsync per file (as mmdebstrap and image builders run it): a throwaway root need not
        # survive a power cut, and the install takes half the time on this shared disk.
        (self.root / "etc/dpkg/dpkg.cfg.d/unsafe-io").write_text("force-unsafe-io\n")
        for d in (self.apt_cache, self.pip_cache):
            d.mkdir(parents=True, exist_ok=True)
        _link_debs(self.apt_cache, self.root / "var/cache/apt/archives")

    def _keep_debs(self) -> None:
        """The debs a command downloaded, into the shared cache for later roots."""
        _link_debs(self.root / "var/cache/apt/archives", self.apt_cache)

    def run(
        self, script: str, timeout: float = 1800, user: str = "root", isolated: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash script in the root as `user`, with a clean environment (no host PIP_*/pyenv variables).

        `isolated` adds a private PID and network namespace: daemons the script starts cannot touch the host's
        network and die with the script (the kernel ends a PID namespace with its first process)."""
        r = shlex.quote(str(self.root))
        mounts = [
            f"mount -t proc proc {r}/proc",
            f"mount -t sysfs sys {r}/sys",
            # A /dev of its own, not the host's: services.sh's `chgrp kvm /dev/kvm` in the root used the
            # root's kvm gid, another group on the host (libvirt then found KVM unusable for its QEMU user
            # and re-probed QEMU on every call: 80 s per domain start for the rest of the CI run).
            f"mount -t tmpfs -o mode=755 dev {r}/dev",
            *(f"touch {r}/dev/{n} && mount --bind /dev/{n} {r}/dev/{n}" for n in DEV_NODES),
            f"mkdir {r}/dev/pts {r}/dev/shm",
            f"mount -t devpts -o newinstance,ptmxmode=0666 devpts {r}/dev/pts && ln -s pts/ptmx {r}/dev/ptmx",
            f"mount -t tmpfs shm {r}/dev/shm && ln -s /proc/self/fd {r}/dev/fd",
            f"mkdir -p {r}/root/.cache/pip",
            f"mount --bind {shlex.quote(str(self.pip_cache))} {r}/root/.cache/pip",
        ]
        home = "/root" if user == "root" else f"/home/{user}"
        if user != "root":
            # A user's own download cache (pip refuses one it does not own), kept between runs like root's.
            cache = shlex.quote(str(self.pip_cache.with_name(f"pip-{user}")))
            mounts += [
                f"mkdir -p {cache} {r}{home}/.cache/pip",
                f"chown -R $(chroot {r} id -u {user}):$(chroot {r} id -g {user}) {cache} {r}{home}/.cache",
                f"mount --bind {cache} {r}{home}/.cache/pip",
            ]
        inner = f"cd {self.src} && {script}"
        env = f"env -i PATH={PATH} HOME={home} USER={user} LANG=C.UTF-8 TERM=dumb PIP_CERT={ROOT_CA}"
        enter = f"chroot {r} {env} bash -euo pipefail -c {shlex.quote(inner)}"
        if user != "root":
            enter = f"chroot --userspec={user}:{user} {r} {env} bash -euo pipefail -c {shlex.quote(inner)}"
        outer = " && ".join([*mounts, enter])
        isolate = ["--pid", "--fork", "--net"] if isolated else []
        try:
            return subprocess.run(
                ["unshare", "--mount", "--propagation", "private", *isolate, "bash", "-c", outer],
                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            self._keep_debs()

    def must(self, script: str, timeout: float = 1800, user: str = "root", isolated: bool = False) -> str:
        result = self.run(script, timeout=timeout, user=user, isolated=isolated)
        assert result.returncode == 0, (
            f"{script!r} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout


def _link_debs(src: Path, dst: Path) -> None:
    """Hard-link (copy across file systems) every .deb of `src` that `dst` lacks: complete files only, apt
    downloads into partial/ and renames."""
    dst.mkdir(parents=True, exist_ok=True)
    for deb in src.glob("*.deb"):
        target = dst / deb.name
        if target.exists():
            continue
        try:
            os.link(deb, target)
        except FileExistsError:
            pass
        except OSError:
            tmp = dst / f".{deb.name}.{os.getpid()}"
            shutil.copyfile(deb, tmp)
            tmp.replace(target)


@contextlib.contextmanager
def pristine_root() -> Iterator[PristineRoot]:
    # Under /var/tmp: the root holds a few hundred MB once packages are in, more than a tmpfs /tmp holds.
    folder = Path(tempfile.mkdtemp(prefix="pm-pristine-", dir="/var/tmp"))
    try:
        root = PristineRoot(folder)
        root.prepare()
        yield root
    finally:
        shutil.rmtree(folder, ignore_errors=True)
