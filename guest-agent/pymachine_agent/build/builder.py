"""The build executor: stages and steps, the cache, the JSON stream of the legacy `POST /build`.

Each RUN runs in a real container (created, started and removed through the engine, on the default bridge
network); COPY/ADD write through an overlay of the parent image; both become a layer through the image
store's commit. Config-only steps commit a config-only image. Tags are applied only after every stage
succeeded, so nothing half-built is ever tagged.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..images.reference import short_id
from . import context, dockerfile
from .cache import BuildCache
from .cachefrom import SourcedCache
from .context import ContextError
from .dockerfile import DockerfileError, Instruction
from .executor import StageRunner
from .steps import StageState, apply_arg, base_config, sub

if TYPE_CHECKING:
    from ..engine import ContainerService
    from ..images import ImageStore

log = logging.getLogger(__name__)


class BuildError(Exception):
    """A failed step; `code` becomes errorDetail.code (the CLI's exit status)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def _json_map(value: Any, what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        raise BuildError(f"invalid {what} parameter: not JSON: {value!r}") from None
    if not isinstance(data, dict):
        raise BuildError(f"invalid {what} parameter: expected a JSON object")
    return data


def _json_list(value: Any, what: str) -> list[str]:
    if value in (None, ""):
        return []
    try:
        data = json.loads(value)
    except ValueError:
        raise BuildError(f"invalid {what} parameter: not JSON: {value!r}") from None
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise BuildError(f"invalid {what} parameter: expected a JSON list of image names")
    return data


def _extra_hosts(values: list[str]) -> list[str]:
    """`extrahosts` (`--add-host`): each `name:ip` (or `name=ip`), checked as `docker run`'s are."""
    out = []
    for item in values:
        for entry in item.split(","):
            name, sep, ip = entry.replace("=", ":", 1).partition(":")
            if not sep or not name or not ip:
                raise BuildError(f"invalid extrahosts entry {entry!r}: expected name:ip")
            out.append(f"{name}:{ip}")
    return out


@dataclass
class BuildParams:
    dockerfile: str = "Dockerfile"
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    nocache: bool = False
    pull: bool = False
    rm: bool = True
    forcerm: bool = False
    quiet: bool = False
    network: str = ""
    extra_hosts: list[str] = field(default_factory=list)  # "name:ip" lines for RUN steps' /etc/hosts
    cache_from: list[str] = field(default_factory=list)  # images whose steps count as cache (cachefrom)

    @classmethod
    def from_query(cls, q: dict[str, Any]) -> BuildParams:
        """A repeated key is a list; single-valued ones take the first value, as Go's FormValue does
        (docker-py sends `dockerfile` twice — name, then content — for a Dockerfile outside the context)."""

        def one(key: str, default: str = "") -> str:
            value = q.get(key)
            if isinstance(value, list):
                value = value[0] if value else None
            return str(value) if value not in (None, "") else default

        def many(key: str) -> list[str]:
            value = q.get(key) or []
            return [value] if isinstance(value, str) else list(value)

        return cls(
            dockerfile=one("dockerfile", "Dockerfile"),
            tags=many("t"),
            build_args=_json_map(one("buildargs") or None, "buildargs"),
            labels={str(k): str(v) for k, v in _json_map(one("labels") or None, "labels").items()},
            target=one("target"),
            nocache=_truthy(one("nocache")),
            pull=_truthy(one("pull")),
            rm=_truthy(one("rm", "1")),
            forcerm=_truthy(one("forcerm")),
            quiet=_truthy(one("q")),
            network=one("networkmode"),
            extra_hosts=_extra_hosts(many("extrahosts")),
            cache_from=_json_list(one("cachefrom") or None, "cachefrom"),
        )


class Output:
    """The JSON stream; in quiet mode only the final id (and errors) go out."""

    def __init__(self, emit: Callable[[dict], None], quiet: bool) -> None:
        self.emit = emit
        self.quiet = quiet

    def stream(self, text: str) -> None:
        if not self.quiet:
            self.emit({"stream": text})

    def error(self, message: str, code: int = 1) -> None:
        self.emit({"errorDetail": {"code": code, "message": message}, "error": message})


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _label_instruction(labels: dict[str, str], line: int) -> Instruction:
    """The `labels` build parameter as a final LABEL step (what Docker's legacy builder does)."""
    shown = " ".join(f'"{k}"="{v}"' for k, v in sorted(labels.items()))
    pairs: list[tuple[str, str | None]] = [(_quote(k), _quote(v)) for k, v in sorted(labels.items())]
    return Instruction(cmd="LABEL", line=line, original="LABEL " + shown, pairs=pairs)


class Builder:
    def __init__(
        self,
        containers: ContainerService,
        store: ImageStore,
        params: BuildParams,
        out: Output,
        ctx: Path,
        scratch: Path,
    ) -> None:
        self.containers = containers  # each RUN is a container of the engine's
        self.store = store
        self.params = params
        self.out = out
        self.ctx = ctx
        self.scratch = scratch
        self.cache = BuildCache(Path(self.store.root).parent / "build" / "cache.json")
        self.fresh: dict[str, str] = {}  # keys → images made by this build
        self.sourced = SourcedCache(self.store, params.cache_from) if params.cache_from else None
        self.digests: dict[str, str] = {}  # context file → sha256, computed while unpacking
        self.step_no = 0
        self.total = 0

    def step(self, text: str) -> None:
        self.step_no += 1
        self.out.stream(f"Step {self.step_no}/{self.total} : {text}\n")

    def build(self, df: dockerfile.Dockerfile) -> str:
        stages = df.stages
        if self.params.target:
            try:
                stages = stages[: df.stage_index(self.params.target) + 1]
            except KeyError:
                raise BuildError(f"failed to reach build target {self.params.target} in Dockerfile") from None
        if self.params.labels:
            last = stages[-1]
            line = (last.commands[-1] if last.commands else last.from_instr).line
            last.commands.append(_label_instruction(self.params.labels, line))
        self.total = len(df.meta_args) + len(stages) + sum(len(s.commands) for s in stages)
        declared: set[str] = set()
        globals_: dict[str, str] = {}
        # BuildKit's automatic platform ARGs (Dockerfiles written for it say `ARG TARGETARCH`)
        meta = StageState(None, {}, args=platform_args())
        for ins in df.meta_args:
            self.step(ins.original)
            apply_arg(ins, meta, self.params.build_args, {}, df.escape)
            declared.update(k for k, _ in ins.pairs)
        globals_ = dict(meta.args)
        results: dict[int, str | None] = {}
        runner = StageRunner(self, df, results)
        for stage in stages:
            state = self.from_step(stage, globals_, results, df)
            for ins in stage.commands:
                self.step(ins.original)
                if ins.cmd == "ARG":
                    declared.update(k for k, _ in ins.pairs)
                runner.run(ins, state, globals_)
            results[stage.index] = state.image_id
        final = results[stages[-1].index]
        if final is None:
            raise BuildError("No image was generated. Is your Dockerfile empty?")
        unused = sorted(set(self.params.build_args) - declared - PREDEFINED_ARGS - set(platform_args()))
        if unused:
            self.out.stream(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        return final

    def from_step(
        self, stage: dockerfile.Stage, globals_: dict[str, str], results: dict[int, str | None],
        df: dockerfile.Dockerfile,
    ) -> StageState:  # fmt: skip
        ins = stage.from_instr
        self.step(ins.original)
        if stage.platform:
            self.out.stream(
                f"[Warning] --platform={stage.platform} is ignored: pymachine builds for the VM's own "
                "platform\n"
            )
        base = sub(ins, stage.base, globals_, df.escape)
        if not base:
            raise DockerfileError(ins.line, "FROM", f"base name ({stage.base}) should not be blank")
        earlier = {s.name: s.index for s in df.stages[: stage.index] if s.name}
        if base.lower() in earlier:
            image_id = results[earlier[base.lower()]]
        elif base.lower() == "scratch":
            image_id = None
        else:
            image_id = self.ensure_image(base)
        if image_id is None:
            return StageState(None, {})
        self.out.stream(f" ---> {short_id(image_id)}\n")
        image_config = self.store.config(image_id)
        state = StageState(image_id, base_config(image_config))
        triggers = list((image_config.get("config") or {}).get("OnBuild") or [])
        if triggers:
            self.out.stream(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
            runner = StageRunner(self, df, results)
            for text in triggers:
                runner.run(dockerfile.parse_instruction(ins.line, text, df.escape), state, globals_)
        return state

    def ensure_image(self, ref: str) -> str:
        from pymachine_agent.images import ImageError

        if not self.params.pull:
            try:
                return self.store.resolve(ref)
            except ImageError:
                pass
        self.out.stream(f"Pulling image {ref}\n")
        try:
            return self.store.pull(ref, progress=self._pull_progress)
        except (ImageError, OSError) as exc:
            if self.params.pull and self.store.exists(ref):
                # --pull on an offline VM, or an image that only exists here (built or loaded): use it
                self.out.stream(f"[Warning] could not pull {ref} ({exc}); using the local image\n")
                return self.store.resolve(ref)
            raise BuildError(f"failed to get base image {ref}: {exc}") from None

    def _pull_progress(self, msg: dict) -> None:
        if msg.get("status") and not msg.get("progressDetail"):
            ident = f"{msg['id']}: " if msg.get("id") else ""
            self.out.stream(f"{ident}{msg['status']}\n")


def platform_args() -> dict[str, str]:
    """TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and the BUILD* ones: the VM's own platform."""
    machine = platform.machine().lower()
    arch, variant = {"x86_64": ("amd64", ""), "aarch64": ("arm64", ""), "armv7l": ("arm", "v7")}.get(
        machine, (machine, "")
    )
    plat = f"linux/{arch}" + (f"/{variant}" if variant else "")
    out: dict[str, str] = {}
    for prefix in ("TARGET", "BUILD"):
        out.update({f"{prefix}PLATFORM": plat, f"{prefix}OS": "linux", f"{prefix}ARCH": arch})
        out[f"{prefix}VARIANT"] = variant
    return out


PREDEFINED_ARGS = {
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
}  # fmt: skip


def run_build(
    containers: ContainerService,
    store: ImageStore,
    fileobj: BinaryIO,
    query: dict[str, Any],
    emit: Callable[[dict], None],
) -> str | None:
    """See the package docstring: build, stream, tag; returns the image id or None after an emitted error."""
    from pymachine_agent.images import ImageError, parse

    try:
        params = BuildParams.from_query(query)
        if query.get("remote"):
            raise BuildError(
                f"remote build context {query['remote']} needs internet access, which pymachine's VM "
                "does not have (offline): clone or download it and build from the local folder"
            )
    except BuildError as exc:
        Output(emit, False).error(str(exc))
        return None
    out = Output(emit, params.quiet)
    scratch = Path(store.tmp_dir())
    try:
        refs = [parse(t) for t in params.tags]  # a bad tag fails before any work, as in Docker
        ctx = scratch / "context"
        started = time.monotonic()
        digests: dict[str, str] = {}
        text = context.prepare(fileobj, ctx, params.dockerfile, digests)
        unpacked = time.monotonic()
        df = dockerfile.parse(text)
        builder = Builder(containers, store, params, out, ctx, scratch)
        builder.digests = digests
        image_id = builder.build(df)
        log.debug(
            "build %s: context %.3f s (%d files), steps %.3f s",
            short_id(image_id), unpacked - started, len(digests), time.monotonic() - unpacked,
        )  # fmt: skip
        if params.quiet:
            emit({"stream": image_id + "\n"})
        else:
            emit({"aux": {"ID": image_id}})
        out.stream(f"Successfully built {short_id(image_id)}\n")
        for ref in refs:
            ref = ref.with_tag(ref.tag or "latest") if not ref.digest else ref
            if not _tagged(store, str(ref), image_id):  # a cached rebuild rewrites nothing
                store.tag(image_id, ref)
            out.stream(f"Successfully tagged {ref.familiar}\n")
        return image_id
    except BuildError as exc:
        out.error(str(exc), exc.code)
    except (DockerfileError, ContextError, ImageError) as exc:
        out.error(str(exc))
    finally:
        # the reply is complete; deleting the unpacked context need not delay the client
        threading.Thread(target=shutil.rmtree, args=(scratch, True), daemon=True).start()
    return None


def _tagged(store: Any, ref: str, image_id: str) -> bool:
    try:
        return store.resolve(ref) == image_id
    except Exception:
        return False
