"""Removing an image tag that is already gone says so, as docker does ("No such image"), with a hint that fits
a remove (nothing to remove; see `pymachine images`), never the pull advice ("no registry access: load the
image") that fits a `run` of a missing image. The CLI's `rmi` and the app's remove share images_io.remove."""

from __future__ import annotations

import pytest
from support.agent import Agent

from pymachine.app.cli.main import main
from pymachine.hostvm import images_io
from pymachine.hostvm.errors import NotFoundError

B = "pymachine/busybox"
TAG = "appux-rmi:gone"


def test_rmi_untags_then_says_nothing_is_left_to_remove(
    agent: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    dc = agent.client()
    dc.images.get(B).tag("appux-rmi", "gone")
    assert main(["rmi", TAG], client=dc) == 0
    assert capsys.readouterr().out == f"Untagged: {TAG}\n"  # the image keeps its other tag: nothing deleted
    assert any(B in t for t in dc.images.get(B).tags)

    assert main(["rmi", TAG], client=dc) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[:2] == [
        f"error: removing {TAG}: No such image: {TAG}",
        f"hint: {images_io.REMOVE_MISSING_HINT}",
    ], err
    assert "registry" not in err and "load" not in err


def test_the_facade_remove_of_a_gone_tag_is_not_found_with_the_remove_hint(agent: Agent) -> None:
    """What the desktop app's Remove calls (app/gui/images_panel.py) and renders as message and hint."""
    with pytest.raises(NotFoundError) as gone:
        images_io.remove(agent.client(), TAG)
    assert gone.value.message == f"removing {TAG}: No such image: {TAG}"
    assert gone.value.hint == images_io.REMOVE_MISSING_HINT


def test_rmi_goes_on_past_a_missing_image_as_docker_does(
    agent: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    dc = agent.client()
    dc.images.get(B).tag("appux-rmi", "kept")
    assert main(["rmi", TAG, "appux-rmi:kept"], client=dc) == 1
    out, err = capsys.readouterr()
    assert out == "Untagged: appux-rmi:kept\n" and f"No such image: {TAG}" in err
    docker = agent.docker(
        "rmi", TAG, check=False
    )  # the real docker CLI against the same engine says the same
    assert docker.returncode == 1 and f"No such image: {TAG}" in docker.stderr


def test_a_missing_image_to_run_still_gets_the_pull_advice(agent: Agent) -> None:
    from pymachine.hostvm import containers

    with pytest.raises(NotFoundError) as gone, containers.api_errors("creating the container"):
        agent.client().containers.create(TAG, ["true"])
    assert gone.value.hint == containers.IMAGE_MISSING_HINT
