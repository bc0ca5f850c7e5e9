"""The container streams service: attach, logs, top, stats and TTY resize, the endpoints that read a
container's output or its cgroup while it runs."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import detachkeys
from ..dockerspec import BadParameter
from ..events import EventBus
from ..network import NetworkManager
from ..runtime import Runtime
from ..runtime.errors import Conflict, NotFound
from ..stdio import wrap_attach
from .records import ContainerRecords


class ContainerStreams:
    def __init__(
        self, *, runtime: Runtime, records: ContainerRecords, events: EventBus, network: NetworkManager | None
    ) -> None:
        self.runtime = runtime
        self.records = records
        self.events = events
        self.network = network

    def attach(
        self,
        ref: str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        logs: bool = False,
        stream: bool = True,
        detach_keys: str = "",
    ) -> Any:
        st = self.records.state(ref)
        tty = bool(st.spec and st.spec.tty)
        try:
            keys = detachkeys.parse(detach_keys)
        except detachkeys.InvalidDetachKeys as exc:
            raise BadParameter(str(exc)) from None
        replay: list[tuple[int, bytes]] = []
        if logs:
            for e in self.runtime.logs(st.id, stdout=stdout, stderr=stderr):
                replay.append((1 if e.stream == "stdout" else 2, e.data))
        if not stream:
            return wrap_attach(None, tty, replay)
        raw = self.runtime.attach(st.id, stdin=stdin, stdout=stdout, stderr=stderr)
        self.events.publish("container", "attach", st.id, self.records.attrs(st.id))
        return wrap_attach(raw, tty, replay, keys)

    def resize(self, ref: str, height: int, width: int) -> None:
        st = self.records.state(ref)
        if not st.running:
            raise Conflict(f"cannot resize container {st.id}: container is not running")
        self.runtime.resize(st.id, height, width)

    def logs(
        self,
        ref: str,
        *,
        follow: bool,
        stdout: bool,
        stderr: bool,
        since: float | None,
        until: float | None,
        timestamps: bool,
        tail: int | None,
    ) -> tuple[Iterator[tuple[int, bytes]], bool]:
        st = self.records.state(ref)
        entries = self.runtime.logs(
            st.id,
            stdout=stdout,
            stderr=stderr,
            since=since or 0,
            until=until or 0,
            tail=tail,
            follow=follow and st.running,
        )

        def gen() -> Iterator[tuple[int, bytes]]:
            for e in entries:
                data = e.data
                if timestamps:
                    data = e.time.encode() + b" " + data
                yield (1 if e.stream == "stdout" else 2, data)

        return gen(), bool(st.spec and st.spec.tty)

    def top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        st = self.records.state(ref)
        if not st.running:
            raise Conflict(f"container {st.id} is not running")
        return self.runtime.top(st.id, ps_args)

    def _net_stats(self, cid: str) -> dict[str, Any]:
        ep = self.network.endpoint(cid) if self.network is not None else None
        out: dict[str, Any] = {}
        for a in ep.attachments if ep else []:
            base = Path("/sys/class/net") / a.host_ifname / "statistics"
            try:
                # the host end of the veth: its rx is the container's tx
                read = _reader(base)
                out[a.ifname] = {
                    "rx_bytes": read("tx_bytes"),
                    "rx_packets": read("tx_packets"),
                    "rx_errors": 0,
                    "rx_dropped": 0,
                    "tx_bytes": read("rx_bytes"),
                    "tx_packets": read("rx_packets"),
                    "tx_errors": 0,
                    "tx_dropped": 0,
                }
            except (OSError, ValueError):
                continue
        return out

    def _stats_sample(self, st: Any) -> dict[str, Any]:
        sample: dict[str, Any]
        try:
            sample = dict(self.runtime.stats(st.id)) if st.running else {}
        except (Conflict, NotFound, OSError):
            sample = {}
        sample.setdefault(
            "cpu_stats",
            {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": os.cpu_count() or 1},
        )
        sample.setdefault("memory_stats", {})
        sample.setdefault("pids_stats", {})
        sample.setdefault("blkio_stats", {"io_service_bytes_recursive": None})
        sample["read"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        sample["name"] = "/" + st.name
        sample["id"] = st.id
        nets = self._net_stats(st.id) if st.running else {}
        if nets:
            sample["networks"] = nets
        return sample

    def stats(self, ref: str, stream: bool = True, one_shot: bool = False) -> Iterator[dict]:
        st = self.records.state(ref)

        def gen() -> Iterator[dict]:
            prev: dict[str, Any] | None = None
            if not stream and not one_shot and st.running:
                prev = self._stats_sample(st)
                time.sleep(1.0)  # Docker's two samples, so `docker stats --no-stream` can compute CPU %
            while True:
                cur = self._stats_sample(self.records.state(st.id))
                cur["precpu_stats"] = (prev or {}).get("cpu_stats") or {"cpu_usage": {"total_usage": 0}}
                cur["preread"] = (prev or {}).get("read", "0001-01-01T00:00:00Z")
                yield cur
                if not stream:
                    return
                prev = cur
                time.sleep(1.0)

        return gen()


def _reader(base: Path) -> Any:
    return lambda name: int((base / name).read_text())
