"""Image references: `[domain/]path[:tag][@digest]`, normalised the way Docker does (distribution/reference).

`busybox` is `docker.io/library/busybox:latest`; `localhost:5000/x` keeps its registry; a reference with a
digest keeps the digest and no default tag. `familiar` is what `docker images` shows (`busybox:latest`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DEFAULT_REGISTRY_HOST = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A normalised reference. `path` never has the domain; `tag` is None when only a digest was given."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The short repository name Docker prints: `busybox`, `user/app`, `localhost:5000/x`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX) :]:
            path = path[len(OFFICIAL_PREFIX) :]
        return path

    @property
    def familiar(self) -> str:
        """`busybox:latest`, `x@sha256:…` or `x:tag@sha256:…`: the form shown in RepoTags/RepoDigests."""
        out = self.familiar_name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    @property
    def registry_host(self) -> str:
        """host[:port] to speak the distribution API to (`docker.io` lives at registry-1.docker.io)."""
        return DEFAULT_REGISTRY_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def insecure(self) -> bool:
        """Plain HTTP for loopback registries, as Docker treats 127.0.0.0/8 and localhost as insecure."""
        return is_loopback_host(self.registry_host)


def is_loopback_host(hostport: str) -> bool:
    host = hostport
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_domain(name: str) -> tuple[str, str]:
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain, rest = first, name[slash + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest
    return domain, rest


def parse(ref: str, default_tag: bool = True) -> Reference:
    """Parse and normalise `ref`; add `:latest` when it has neither tag nor digest (unless default_tag=False).

    Raises InvalidReference with Docker's wording for malformed references."""
    if not ref or ref != ref.strip():
        raise InvalidReference(f"invalid reference format: {ref!r}")
    if _HEX64.fullmatch(ref):
        raise InvalidReference(f"invalid repository name ({ref}), cannot specify 64-byte hexadecimal strings")
    remainder, digest = ref, None
    if "@" in ref:
        remainder, digest = ref.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidReference(f"invalid reference format: bad digest in {ref!r}")
    tag = None
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid reference format: bad tag in {ref!r}")
    if not remainder:
        raise InvalidReference(f"invalid reference format: {ref!r}")
    domain, path = _split_domain(remainder)
    if not _DOMAIN.fullmatch(domain):
        raise InvalidReference(f"invalid reference format: bad registry {domain!r} in {ref!r}")
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            if component.lower() != component and _COMPONENT.fullmatch(component.lower()):
                raise InvalidReference(
                    f"invalid reference format: repository name ({remainder}) must be lowercase"
                )
            raise InvalidReference(f"invalid reference format: {ref!r}")
    if len(f"{domain}/{path}") > NAME_MAX:
        raise InvalidReference(f"invalid reference format: repository name must not exceed {NAME_MAX} chars")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def parse_repo_tag(repo: str, tag: str | None) -> Reference:
    """The API's `fromImage=x&tag=y` / `repo=x&tag=y` pair: tag may be empty, a tag or a digest."""
    if tag:
        sep = "@" if _DIGEST.fullmatch(tag) else ":"
        return parse(f"{repo}{sep}{tag}")
    return parse(repo)


def is_image_id(value: str) -> bool:
    """`sha256:<64 hex>` or a bare 64-hex string."""
    return bool(_SHA256.fullmatch(value) or _HEX64.fullmatch(value))


def short_id(digest: str) -> str:
    """The 12 hex digits docker shows for an image id or a layer digest."""
    return digest.removeprefix("sha256:")[:12]


def is_id_prefix(value: str) -> bool:
    """A possible short ID (`4f3a…`, `sha256:4f3a…`): hex only, so it can never shadow a valid name lookup."""
    hexpart = value[7:] if value.startswith("sha256:") else value
    return bool(re.fullmatch(r"[0-9a-f]{1,64}", hexpart))
