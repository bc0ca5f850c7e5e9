"""Event filters and history, and the named-volume store."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymachine_agent.events import EventBus, event_matches, make_event
from pymachine_agent.volumes import VolumeBadName, VolumeInUse, VolumeNotFound, VolumeStore


def test_event_shape_and_filters() -> None:
    e = make_event(
        "container",
        "die",
        "ab" * 32,
        {"name": "web", "image": "busybox", "exitCode": "3", "com.docker.compose.project": "p"},
    )
    assert e["status"] == "die" and e["id"] == "ab" * 32 and e["from"] == "busybox"
    assert e["Actor"]["Attributes"]["exitCode"] == "3" and e["scope"] == "local"
    assert event_matches(e, {"type": ["container"], "event": ["die", "start"]})
    assert event_matches(e, {"container": ["web"]}) and event_matches(e, {"container": ["abab"]})
    assert event_matches(e, {"label": ["com.docker.compose.project=p"]})
    assert not event_matches(e, {"label": ["com.docker.compose.project=q"]})
    assert not event_matches(e, {"type": ["image"]})
    assert event_matches(make_event("container", "exec_start: sh", "x"), {"event": ["exec_start"]})
    net = make_event("network", "connect", "n1", {"name": "mynet", "container": "c"})
    assert "status" not in net and event_matches(net, {"network": ["mynet"]})


def test_bus_replays_history_since_and_delivers_live() -> None:
    bus = EventBus(history=10)
    old = bus.publish("container", "create", "c1", {"name": "a"})
    sub = bus.subscribe({"event": ["create", "start"]}, since=old["timeNano"] / 1e9)
    bus.publish("container", "die", "c1", {"name": "a"})
    bus.publish("container", "start", "c1", {"name": "a"})
    got = [sub.get(timeout=1), sub.get(timeout=1)]
    assert [g["Action"] for g in got if g] == ["create", "start"]
    assert sub.get(timeout=0.1) is None
    sub.close()
    assert [e["Action"] for e in bus.past({}, None, 2e9)] == ["create", "die", "start"]


def test_volume_store(tmp_path: Path) -> None:
    users: dict[str, list[str]] = {}
    store = VolumeStore(tmp_path, in_use=lambda name: users.get(name, []))
    v = store.create("data", labels={"k": "v"})
    assert v["Name"] == "data" and v["Driver"] == "local" and v["Mountpoint"].endswith("/data/_data")
    assert store.create("data")["CreatedAt"] == v["CreatedAt"]  # idempotent
    anon = store.create(anonymous=True)["Name"]
    assert len(anon) == 64 and store.is_anonymous(anon)
    assert [x["Name"] for x in store.list({"label": ["k=v"]})] == ["data"]
    with pytest.raises(VolumeBadName):
        store.create("bad/name")
    users["data"] = ["c1"]
    with pytest.raises(VolumeInUse):
        store.remove("data")
    assert store.list({"dangling": ["true"]})[0]["Name"] == anon
    # prune takes anonymous unused volumes only unless all=true
    assert store.prune()["VolumesDeleted"] == [anon]
    users.clear()
    assert store.prune({"all": ["true"]})["VolumesDeleted"] == ["data"]
    with pytest.raises(VolumeNotFound):
        store.inspect("data")
