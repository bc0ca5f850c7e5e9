"""Image reference parsing and normalisation, as Docker's distribution/reference does it."""

from __future__ import annotations

import pytest

from pymachine_agent.images import InvalidReference, parse, parse_repo_tag
from pymachine_agent.images.layers import clean_parts
from pymachine_agent.images.reference import is_id_prefix, is_image_id, is_loopback_host
from pymachine_agent.images.regclient import parse_challenge
from pymachine_agent.images.views import created_seconds

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest"),
        ("127.0.0.1:5000/a/b:tag", "127.0.0.1:5000/a/b:tag", "127.0.0.1:5000/a/b:tag"),
        ("example.com/team/app:v1.2_3-x", "example.com/team/app:v1.2_3-x", "example.com/team/app:v1.2_3-x"),
        (f"busybox@sha256:{HEX}", f"docker.io/library/busybox@sha256:{HEX}", f"busybox@sha256:{HEX}"),
        (f"a:1@sha256:{HEX}", f"docker.io/library/a:1@sha256:{HEX}", f"a:1@sha256:{HEX}"),
        ("my_repo/a__b/c-d.e", "docker.io/my_repo/a__b/c-d.e:latest", "my_repo/a__b/c-d.e:latest"),
        ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
    ],
)
def test_normalisation(text: str, full: str, familiar: str) -> None:
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar


def test_parts_and_registry_host() -> None:
    ref = parse("busybox")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "latest", None)
    assert ref.registry_host == "registry-1.docker.io" and not ref.insecure
    assert parse(f"x@sha256:{HEX}").tag is None
    assert parse("localhost:5000/x").insecure and parse("127.0.0.1:5000/x").insecure
    assert parse("[::1]:5000/x").insecure
    assert not parse("example.com:5000/x").insecure
    assert parse("busybox", default_tag=False).tag is None
    assert parse("Upper.Domain.com/x").domain == "Upper.Domain.com"  # domains may have capitals


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " busybox",
        "Busybox",
        "user/App",
        "a//b",
        "a/",
        "/a",
        "a:",
        "a:-tag",
        "a:" + "t" * 129,
        "a@sha256:short",
        "a@",
        HEX,  # a 64-hex string is an ID, never a name
        "a..b",
        "-a",
        "a/b-",
        "x" * 300,
    ],
)
def test_invalid_references(bad: str) -> None:
    with pytest.raises(InvalidReference):
        parse(bad)


def test_uppercase_message_says_lowercase() -> None:
    with pytest.raises(InvalidReference, match="must be lowercase"):
        parse("Busybox")


def test_repo_tag_pairs_from_the_api() -> None:
    assert str(parse_repo_tag("docker.io/library/alpine", "3.20")) == "docker.io/library/alpine:3.20"
    assert str(parse_repo_tag("alpine", "")) == "docker.io/library/alpine:latest"
    assert parse_repo_tag("alpine", f"sha256:{HEX}").digest == f"sha256:{HEX}"
    assert str(parse_repo_tag("localhost:5000/a/b", None)) == "localhost:5000/a/b:latest"


def test_ids_and_prefixes() -> None:
    assert is_image_id(f"sha256:{HEX}") and is_image_id(HEX)
    assert not is_image_id("sha256:abc") and not is_image_id("busybox")
    assert is_id_prefix("abc123") and is_id_prefix("sha256:abc")
    assert not is_id_prefix("busybox") and not is_id_prefix("")


def test_loopback_hosts() -> None:
    assert (
        is_loopback_host("localhost:5000") and is_loopback_host("127.1.2.3") and is_loopback_host("[::1]:1")
    )
    assert is_loopback_host("registry.localhost")
    assert not is_loopback_host("10.0.2.2:5000") and not is_loopback_host("docker.io")


@pytest.mark.parametrize(
    ("name", "parts"),
    [("./a/b", ("a", "b")), ("a//b/", ("a", "b")), ("./", ()), (".", ()), ("a/./b", ("a", "b"))],
)
def test_layer_entry_names_are_split(name: str, parts: tuple[str, ...]) -> None:
    assert clean_parts(name, name) == parts


@pytest.mark.parametrize("name", ["../x", "a/../../x", "a/..", "/etc/passwd", "//x"])
def test_layer_entry_names_that_escape_are_refused(name: str) -> None:
    with pytest.raises(Exception, match="refusing layer entry"):
        clean_parts(name, name)


def test_bearer_challenge_parsing() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_created_times() -> None:
    assert created_seconds("2024-01-02T03:04:05.123456789Z") == 1704164645
    assert created_seconds("2024-01-02T04:04:05+01:00") == 1704164645
    assert created_seconds("") == 0 and created_seconds("garbage") == 0


def test_manifest_digests_are_checked_before_use() -> None:
    from pymachine_agent.images.oci import check_descriptors

    good = {"config": {"digest": "sha256:" + HEX}, "layers": [{"digest": "sha256:" + "b" * 64}]}
    check_descriptors(good)
    for bad in ("sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64, ""):
        with pytest.raises(Exception, match="malformed or unsupported digest"):
            check_descriptors({**good, "layers": [{"digest": bad}]})
    with pytest.raises(Exception, match="malformed"):
        check_descriptors({"manifests": [{"digest": "sha256:x"}]})
