"""A real local registry (Debian's `docker-registry`, distribution 2.8) for pull/push tests, and builders of
small real image tarballs from the host's busybox-static.

    with local_registry(tmp_path, users={"alice": "secret"}) as reg:
        reg.host  # "127.0.0.1:41234"

Everything here talks to loopback only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "env", "mount", "ps", "rm")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bcrypt(password: str) -> str:
    try:
        import bcrypt  # type: ignore[import-not-found]

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    except ImportError:
        import crypt  # deprecated but present in 3.11; libxcrypt does bcrypt

        return crypt.crypt(password, "$2b$05$" + hashlib.sha256(password.encode()).hexdigest()[:22])


@dataclass
class Registry:
    host: str
    storage: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def blob_files(self) -> list[Path]:
        """The registry's own data files for blobs (to corrupt one in a test)."""
        return sorted(self.storage.rglob("blobs/sha256/*/*/data"))


@contextlib.contextmanager
def local_registry(workdir: Path, users: dict[str, str] | None = None) -> Iterator[Registry]:
    """Run docker-registry on 127.0.0.1:<free port> with its storage under `workdir`; stop it afterwards."""
    if not Path(REGISTRY_BIN).exists():
        raise RuntimeError(f"{REGISTRY_BIN} is missing: apt-get install docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = _free_port()
    auth = ""
    if users:
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in users.items()))
        auth = f"auth:\n  htpasswd:\n    realm: pymachine-test\n    path: {htpasswd}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = workdir / "registry.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=logf, stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, proc, log)
        yield Registry(f"127.0.0.1:{port}", storage, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 401 with auth on: it is serving
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"docker-registry did not answer on port {port}: {log.read_text()[-2000:]}")


# ---- image tarballs -------------------------------------------------------------------------------


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """A tar of the given headers (and file contents), in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info, data = (e, None) if isinstance(e, tarfile.TarInfo) else e
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_700_000_000
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def file(name: str, data: bytes, mode: int = 0o644, **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, tarfile.REGTYPE, mode, **kw), data


def busybox_layer() -> bytes:
    """Layer 1 of a tiny real image: /bin/busybox from busybox-static plus applet symlinks, /etc, /tmp."""
    items: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = [
        entry("bin/", tarfile.DIRTYPE, 0o755),
        file("bin/busybox", BUSYBOX.read_bytes(), 0o755),
    ]
    items += [entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, linkname="busybox") for a in BUSYBOX_APPLETS]
    items += [
        entry("etc/", tarfile.DIRTYPE, 0o755),
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        file("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        entry("tmp/", tarfile.DIRTYPE, 0o1777),
        entry("root/", tarfile.DIRTYPE, 0o700),
    ]
    return tar_bytes(items)


def image_config(layers: list[bytes], cmd: list[str] | None = None, **config: object) -> bytes:
    diff_ids = ["sha256:" + hashlib.sha256(_plain(layer)).hexdigest() for layer in layers]
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd or ["sh"], **config},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"} for i in range(len(layers))
        ],
    }
    return json.dumps(cfg, sort_keys=True).encode()


def _plain(layer: bytes) -> bytes:
    import gzip

    return gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer


def docker_archive(layers: list[bytes], repo_tags: list[str], config: bytes | None = None) -> bytes:
    """A legacy (pre-25) `docker save` tarball: <id>.json, <dir>/layer.tar, manifest.json."""
    config = config or image_config(layers)
    config_hex = hashlib.sha256(config).hexdigest()
    items: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = [file(f"{config_hex}.json", config)]
    names = []
    for i, layer in enumerate(layers):
        d = hashlib.sha256(b"%d" % i + layer).hexdigest()
        items += [entry(f"{d}/", tarfile.DIRTYPE, 0o755), file(f"{d}/layer.tar", layer)]
        names.append(f"{d}/layer.tar")
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": repo_tags, "Layers": names}]
    items.append(file("manifest.json", json.dumps(manifest).encode()))
    return tar_bytes(items)


def busybox_archive(tag: str = "pymachine/busybox:latest") -> bytes:
    """The shared builder's `pymachine/busybox` tarball when it exists, else one made here the same way."""
    try:
        from pymachine.hostvm import container_images  # type: ignore[attr-defined]

        builder = getattr(container_images, "busybox_archive", None)
    except ImportError:
        builder = None
    if builder is not None and tag == "pymachine/busybox:latest":
        return bytes(builder())
    return docker_archive([busybox_layer()], [tag])


__all__ = [
    "Registry",
    "busybox_archive",
    "busybox_layer",
    "docker_archive",
    "entry",
    "file",
    "image_config",
    "local_registry",
    "tar_bytes",
]
