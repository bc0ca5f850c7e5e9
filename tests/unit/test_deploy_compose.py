"""The compose subset of `pymachine app` (hostvm/deploy/compose.py): what a pushed compose file becomes (start
order, routed service, contexts inside the tree), and every input outside the subset refused with the key's
name, including YAML that would construct Python objects."""

from __future__ import annotations

import pytest

from pymachine.hostvm.deploy import compose
from pymachine.hostvm.deploy.compose import Build, ComposeError
from pymachine.hostvm.deploy.model import App, Release, ServiceRun, from_json, to_json

TWO = """
services:
  web:
    build: ./web
    ports: ["8000:80"]
    environment: [MODE=prod, DEBUG=false]
    depends_on: {api: {condition: service_started}}
  api:
    build: {context: api, dockerfile: Api.dockerfile, args: {V: 2}}
    command: httpd -f -p 9000
    depends_on: [db]
  db:
    image: pymachine/busybox
    environment: {FLAG: true}
"""


def test_a_compose_file_becomes_services_in_start_order_routed_to_the_first_with_ports() -> None:
    plan = compose.parse(TWO, "compose.yaml")
    assert [s.name for s in plan.services] == ["db", "api", "web"]
    assert plan.routed == "web" and plan.routed_service.port == 80
    web, api, db = plan.services[2], plan.services[1], plan.services[0]
    assert web.build == Build("web") and web.environment == {"MODE": "prod", "DEBUG": "false"}
    assert api.build == Build("api", "Api.dockerfile", {"V": "2"})
    assert api.command == ["httpd", "-f", "-p", "9000"] and api.port is None
    assert db.build is None and db.image == "pymachine/busybox" and db.environment == {"FLAG": "true"}


def test_the_app_setting_names_the_routed_service_and_contexts_are_relative_to_the_file() -> None:
    plan = compose.parse(TWO, "deploy/compose.yaml", routed="api")
    assert plan.routed == "api"
    assert plan.routed_service.build == Build("deploy/api", "Api.dockerfile", {"V": "2"})
    assert compose.parse("services: {a: {build: ., ports: [80]}}", "compose.yaml").services[0].build == Build(
        ""
    )


@pytest.mark.parametrize(
    "text, words",
    [
        ("services: {a: {image: x, volumes: [d:/d]}}", "service 'a': 'volumes' is not supported"),
        (
            "services: {a: {image: x, ports: [80]}}\nnetworks: {n: {}}",
            "top level: 'networks' is not supported",
        ),
        ("services: {a: {build: {context: ., target: t}, ports: [80]}}", "build: 'target' is not supported"),
        ("services: {a: {build: ../up, ports: [80]}}", "leaves the pushed tree"),
        ("services: {a: {build: /etc, ports: [80]}}", "relative path inside the pushed tree"),
        ("services: {a: {build: 'https://x.invalid/r.git', ports: [80]}}", "relative path"),
        ("services: {a: {build: {context: ., dockerfile: ../D}, ports: [80]}}", "leaves the pushed tree"),
        ("services: {a: {image: x, ports: ['53:53/udp']}}", "port '53:53/udp' is not supported"),
        ("services: {a: {image: x, ports: ['8000-8010:80']}}", "is not supported"),
        ("services: {a: {image: x}}", "no service has 'ports:'"),
        ("services: {a: {ports: [80]}}", "neither 'build' nor 'image'"),
        ("services: {a: {image: x, ports: [80], environment: [TOKEN]}}", "TOKEN has no value"),
        ("services: {a: {image: x, ports: [80], depends_on: [b]}}", "depends on 'b', which is not a service"),
        (
            "services: {a: {image: x, ports: [80], depends_on: [b]}, b: {image: x, depends_on: [a]}}",
            "cycle: a -> b -> a",
        ),
        (
            "services: {a: {image: x, ports: [80], depends_on: {b: {condition: service_healthy}}}, "
            "b: {image: x}}",
            "condition 'service_healthy' is not supported",
        ),
        ("services: {Web: {image: x, ports: [80]}}", "service name 'Web' is not supported"),
        ("services: {}", "one or more services"),
        ("- a list", "must be a mapping"),
        ("services: {a: {image: x\n", "not valid YAML"),
        ("services: {a: !!python/object/apply:os.system [id]}", "not valid YAML"),
    ],
)
def test_what_is_outside_the_subset_is_refused_by_name(text: str, words: str) -> None:
    with pytest.raises(ComposeError, match=words.replace("(", r"\(").replace(".", r"\.")):
        compose.parse(text, "compose.yaml")


def test_a_routed_service_that_is_not_there_is_refused() -> None:
    with pytest.raises(
        ComposeError, match=r"routes to service 'nope', which is not in it \(services: web, api, db\)"
    ):
        compose.parse(TWO, "compose.yaml", routed="nope")


def test_a_compose_release_survives_the_state_file() -> None:
    runs = (
        ServiceRun("db", "sha256:1", {"A": "b"}, None, None),
        ServiceRun("web", "sha256:2", {}, ["sh"], 80),
    )
    app = App("w", "dev", 8080, service="web", compose="c.yaml").with_release(
        Release(1, "sha256:2", {"K": "v"}, 1.0, "push", "c" * 40, services=runs, routed="web")
    )
    back = from_json(to_json(app))
    assert back == app and back.current_release is not None and back.current_release.routed_service == runs[1]
    assert back.container(1) == "app-w-v1-web"  # what serves it (the desktop app's Apps tab asks this)
