"""A minimal OCI distribution (registry v2) HTTP client over http.client: bearer-token and basic auth from
the registry's challenge, redirects that drop Authorization on a cross-host hop, Docker-shaped errors."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn

from ..errors import RegistryError

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_REDIRECTS = (301, 302, 303, 307, 308)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` -> ("bearer", {...}) (pure; unit-tested)."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


def connect_error_text(err: OSError, host: str) -> str:
    """Why the registry could not be reached, as docker words it (`lookup HOST: …`), without Python's
    `[Errno -3]` prefix (pure; unit-tested). TLS errors keep their whole text: it names the certificate."""
    why = str(err) if isinstance(err, ssl.SSLError) or not err.strerror else err.strerror
    return f"lookup {host}: {why}" if isinstance(err, socket.gaierror) else why


def registry_error_text(body: bytes) -> str:
    """`code: message` from distribution's {"errors": [{"code", "message", "detail"}]} body."""
    try:
        errors = json.loads(body).get("errors") or []
        # Docker prints the code the way the registry names it in words: "manifest unknown: manifest unknown"
        parts = (f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}" for e in errors)
        return "; ".join(p.strip(": ") for p in parts)
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    stream: http.client.HTTPResponse
    conn: http.client.HTTPConnection

    def read(self) -> bytes:
        try:
            return self.stream.read()
        finally:
            self.close()

    def read_limited(self, limit: int, what: str) -> bytes:
        """The whole body, refusing one longer than `limit` (manifests, configs: small documents)."""
        try:
            data = self.stream.read(limit + 1)
        finally:
            self.close()
        if len(data) > limit:
            raise RegistryError(f"{what} is larger than {limit} bytes: refused")
        return data

    def close(self) -> None:
        self.stream.close()
        self.conn.close()


@dataclass
class RegistryClient:
    host: str  # host[:port] of the distribution API
    insecure: bool = False  # plain HTTP (loopback registries)
    auth: dict[str, Any] | None = None  # Docker AuthConfig: username/password, or registrytoken
    timeout: float = 120.0
    _tokens: dict[str, str] = field(default_factory=dict)
    _basic: bool = False

    @property
    def base(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}"

    def _connect(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        if url.scheme == "https":
            return http.client.HTTPSConnection(
                url.netloc, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(url.netloc, timeout=self.timeout)

    def _credentials(self) -> tuple[str, str] | None:
        if self.auth and self.auth.get("username"):
            return str(self.auth["username"]), str(self.auth.get("password", ""))
        return None

    def _auth_header(self, scope: str) -> str | None:
        if self.auth and self.auth.get("registrytoken"):
            return f"Bearer {self.auth['registrytoken']}"
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        creds = self._credentials()
        if self._basic and creds:
            return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        return None

    def _fetch_token(self, params: dict[str, str], scope: str) -> None:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} sent a bearer challenge without a realm")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {}
        creds = self._credentials()
        if creds:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        resp = self._send("GET", url, headers, None)
        body = resp.read()
        if resp.status != 200:
            raise RegistryError(
                f"unauthorized: the token service at {realm} refused: {resp.status} "
                f"{registry_error_text(body)}",
                401,
            )
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f"the token service at {realm} returned no token")
        self._tokens[scope] = token

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | BinaryIO | None
    ) -> Response:
        for _ in range(6):
            parts = urllib.parse.urlsplit(url)
            conn = self._connect(parts)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request(method, path or "/", body=body, headers=headers)
                resp = conn.getresponse()
            except OSError as err:
                conn.close()
                raise RegistryError(
                    f'{method} "{url}": {connect_error_text(err, parts.hostname or "")}'
                ) from err
            if resp.status in _REDIRECTS and "Location" in resp.headers and method in ("GET", "HEAD"):
                target = urllib.parse.urljoin(url, resp.headers["Location"])
                resp.read()
                conn.close()
                if urllib.parse.urlsplit(target).netloc != parts.netloc:
                    # a blob CDN must never see the registry's credentials
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                url = target
                continue
            return Response(resp.status, resp.headers, resp, conn)
        raise RegistryError(f"too many redirects fetching {url}")

    def request(
        self,
        method: str,
        path: str,
        scope: str,
        headers: dict[str, str] | None = None,
        body: bytes | BinaryIO | None = None,
    ) -> Response:
        """One API call (path under /v2/ or an absolute upload URL); answers a 401 challenge once."""
        url = path if "://" in path else self.base + path
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            if hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            resp = self._send(method, url, hdrs, body)
            if resp.status != 401 or attempt:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.read()
            scheme, params = parse_challenge(challenge)
            if scheme == "bearer":
                self._fetch_token(params, params.get("scope") or scope)
                scope = params.get("scope") or scope
            elif scheme == "basic" and self._credentials() and not self._basic:
                self._basic = True
            else:
                self._unauthorized(method, url)
        raise AssertionError("unreachable")

    def _unauthorized(self, method: str, url: str) -> NoReturn:
        raise RegistryError(
            f"unauthorized: authentication required ({method} {url}); log in with `docker login {self.host}`",
            401,
        )
