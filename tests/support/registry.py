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
from typing import Any

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
    tokens: Any = None  # the TokenService when token_auth=True (its .requests record what clients asked)

    def blob_files(self) -> list[Path]:
        """The registry's own data files for blobs (to corrupt one in a test)."""
        return sorted(self.storage.rglob("blobs/sha256/*/*/data"))


@contextlib.contextmanager
def local_registry(
    workdir: Path, users: dict[str, str] | None = None, token_auth: bool = False
) -> Iterator[Registry]:
    """Run docker-registry on 127.0.0.1:<free port> with its storage under `workdir`; stop it afterwards.

    users: htpasswd basic auth; with token_auth=True the same users log in at a token service instead
    (TokenService below), whose ES256 JWTs the registry verifies against its certificate."""
    if not Path(REGISTRY_BIN).exists():
        raise RuntimeError(f"{REGISTRY_BIN} is missing: apt-get install docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = _free_port()
    auth = ""
    tokens = None
    if token_auth:
        tokens = TokenService(workdir, users or {})
        auth = tokens.registry_config()
    elif users:
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
        yield Registry(f"127.0.0.1:{port}", storage, proc, log, tokens)
    finally:
        if tokens is not None:
            tokens.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class TokenService:
    """A Docker token-auth service (the distribution token spec) on 127.0.0.1: Basic login, ES256 JWT with an
    x5c header the real registry checks against `rootcertbundle`. Records each request as (auth?, scope)."""

    SERVICE = "pymachine-test-registry"
    ISSUER = "pymachine-test-issuer"

    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        import datetime
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.users = users
        self.requests: list[tuple[bool, str]] = []
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pymachine test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = workdir / "token-signer.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                service.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def registry_config(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: http://127.0.0.1:{self.port}/token\n"
            f"    service: {self.SERVICE}\n    issuer: {self.ISSUER}\n    rootcertbundle: {self.bundle}\n"
        )

    def handle(self, req: Any) -> None:
        import base64
        import urllib.parse

        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        scope = query.get("scope", [""])[0]
        header = req.headers.get("Authorization", "")
        user = None
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) == password:
                user = name
        self.requests.append((header.startswith("Basic "), scope))
        if user is None:
            req.send_response(401)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        body = json.dumps({"token": self.jwt(user, scope), "expires_in": 300}).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def jwt(self, user: str, scope: str) -> str:
        import base64
        import uuid

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        if scope.startswith("repository:"):
            _, name, actions = scope.split(":", 2)
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": self.ISSUER,
            "sub": user,
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    """A one-layer busybox image made here, with known config values the tests assert on. (The shared
    builder's tarball, via support.agent.busybox_tarball(), is loaded by its own test.)"""
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
