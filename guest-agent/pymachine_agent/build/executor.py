"""One step of a stage: the cache lookup, then ARG / a config change / RUN in a container / COPY and ADD."""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymachine_agent.images.reference import short_id
from pymachine_agent.runtime.user import resolve as resolve_user

from .cache import hash_paths, step_key
from .context import ContextError, expand_sources, resolve_in_root
from .dockerfile import Dockerfile, DockerfileError, Instruction
from .rootfs import CopyOptions, copy_into, make_dirs, readonly_rootfs, strip_mount_points, writable_rootfs
from .steps import StageState, apply_arg, apply_config, command, sub

if TYPE_CHECKING:
    from .builder import Builder

_OUTPUT_TAIL = 4096
_HEARTBEAT = 5.0  # seconds


class StageRunner:
    def __init__(self, builder: Builder, df: Dockerfile, results: dict[int, str | None]) -> None:
        self.b = builder
        self.df = df
        self.results = results
        self.counter = 0

    # -- cache ------------------------------------------------------------------------------------------
    def cached(self, key: str, state: StageState, created_by: str = "") -> bool:
        # --no-cache still reuses what this very build produced for the same key (two stages starting with
        # the same steps): otherwise the index would end up pointing at two different images for one key
        hit = self.b.fresh.get(key) if self.b.params.nocache else self.b.cache.get(key)
        if not hit or not self.b.store.exists(hit):
            hit = None
            if created_by and self.b.sourced is not None and not self.b.params.nocache:
                hit = self.b.sourced.lookup(state.image_id, created_by, dict(state.config))
                if hit:
                    self.b.cache.put(key, hit)  # the next build finds it without --cache-from
            if not hit:
                return False
        self.b.out.stream(f" ---> Using cache\n ---> {short_id(hit)}\n")
        state.image_id = hit
        return True

    def record(self, key: str, image_id: str, state: StageState) -> None:
        self.b.cache.put(key, image_id)
        self.b.fresh[key] = image_id
        self.b.out.stream(f" ---> {short_id(image_id)}\n")
        state.image_id = image_id

    def scratch_dir(self) -> Path:
        self.counter += 1
        path = self.b.scratch / f"step-{id(self)}-{self.counter}"
        path.mkdir(parents=True)
        return path

    # -- dispatch ---------------------------------------------------------------------------------------
    def run(self, ins: Instruction, state: StageState, globals_: dict[str, str]) -> None:
        from .builder import BuildError

        if ins.cmd == "ARG":
            text = apply_arg(ins, state, self.b.params.build_args, globals_, self.df.escape)
            key = step_key(state.image_id or "scratch", text, {"args": state.args})
            parent = state.image_id or ""
            if self.b.cache.get(key) == parent:
                if not self.b.params.nocache:
                    self.b.out.stream(" ---> Using cache\n")
            else:
                self.b.cache.put(key, parent)
            if parent:
                self.b.out.stream(f" ---> {short_id(parent)}\n")
        elif ins.cmd == "RUN":
            self.run_step(ins, state)
        elif ins.cmd in ("COPY", "ADD"):
            self.copy_step(ins, state)
        elif ins.cmd in ("FROM",):
            raise BuildError(f"line {ins.line}: FROM is not allowed here")
        else:
            changes, text = apply_config(ins, state, self.df.escape)
            key = step_key(state.image_id or "scratch", text, {"changes": changes, "author": state.author})
            state.config.update(changes)
            created_by = f"/bin/sh -c #(nop)  {text}"
            if self.cached(key, state, created_by):
                return
            work = self.scratch_dir()
            upper = self._make_workdir(work, state) if ins.cmd == "WORKDIR" else None
            new = self.b.store.commit(
                upper,
                state.image_id,
                dict(state.config),
                author=state.author,
                created_by=created_by,
            )
            shutil.rmtree(work, ignore_errors=True)
            self.record(key, new, state)

    def _make_workdir(self, work: Path, state: StageState) -> Path | None:
        """WORKDIR creates its directory when the image lacks it (as Docker does); returns the upper dir to
        commit as a layer, or None when the directory already exists."""
        path = (state.config.get("WorkingDir") or "/").lstrip("/")
        layers = self.b.store.layer_dirs(state.image_id) if state.image_id else []
        with writable_rootfs(work, layers) as ws:
            if resolve_in_root(ws.rootfs, path).is_dir():
                return None
            make_dirs(ws.rootfs, path, CopyOptions())
        return ws.upper

    # -- RUN --------------------------------------------------------------------------------------------
    def run_step(self, ins: Instruction, state: StageState) -> None:
        from .builder import BuildError

        argv = command(ins, state.config)
        env = state.run_env()
        prefix = (
            f"|{len(state.args)} " + " ".join(f"{k}={v}" for k, v in state.args.items()) + " "
            if state.args
            else ""
        )
        created_by = prefix + (" ".join(argv) if not ins.json else "RUN " + json.dumps(argv))
        extra = {
            "env": env,
            "user": state.config.get("User") or "",
            "workdir": state.config.get("WorkingDir") or "",
            "network": self.b.params.network,
        }
        if self.b.params.extra_hosts:  # only then: the keys of earlier builds stay valid
            extra["extra_hosts"] = self.b.params.extra_hosts
        key = step_key(state.image_id or "scratch", "RUN " + json.dumps(argv), extra)
        if self.cached(key, state, created_by):
            return
        if state.image_id is None:
            raise BuildError(
                f"RUN on line {ins.line} needs a base image: FROM scratch has no files to run yet"
            )
        containers = self.b.containers
        body = {
            "Image": state.image_id,
            "Entrypoint": [""],
            "Cmd": argv,
            "Env": env,
            "WorkingDir": state.config.get("WorkingDir") or "",
            "User": state.config.get("User") or "",
            "Labels": {},
            "AttachStdout": True,
            "AttachStderr": True,
            "HostConfig": {
                "NetworkMode": self.b.params.network or "default",
                "ExtraHosts": self.b.params.extra_hosts or None,
            },
        }
        cid, _warnings = containers.create(body, "")
        failed_run = False
        try:
            self.b.out.stream(f" ---> Running in {cid[:12]}\n")
            stream = containers.raw_output(cid)
            waiter = containers.waiter(cid, "next-exit")
            containers.start(cid)
            tail = self._pump(stream)
            code, error = waiter()
            if code != 0 or error:
                failed_run = True
                output = "" if not self.b.out.quiet else f": {tail.decode(errors='replace').strip()}"
                shown = " ".join(argv) if not ins.json else json.dumps(argv)
                raise BuildError(f"The command '{shown}' returned a non-zero code: {code}{output}", code or 1)
            upper = containers.upper_dir(cid)
            strip_mount_points(upper, self.b.store.layer_dirs(state.image_id))
            # a RUN that changed no file adds no layer (BuildKit's way): fewer layers, and no repeated empty
            # layer in one image
            layer = upper if any(upper.iterdir()) else None
            new = self.b.store.commit(layer, state.image_id, dict(state.config), created_by=created_by)
        except BaseException:
            # A failed command's container stays for inspection unless forcerm (Docker's rule); any other
            # failure (client gone mid-stream, engine error) must not leave a container running.
            if not failed_run or self.b.params.forcerm:
                with contextlib.suppress(Exception):
                    containers.remove(cid, force=True)
            raise
        if self.b.params.rm or self.b.params.forcerm:
            with contextlib.suppress(Exception):
                containers.remove(cid, force=True)
            self.b.out.stream(f" ---> Removed intermediate container {cid[:12]}\n")
        self.record(key, new, state)

    def _pump(self, stream: Any) -> bytes:
        """Relay the container's multiplexed stdout/stderr as stream lines; keep the tail for errors."""
        buf = b""
        tail = b""
        try:
            while True:
                # A quiet command still probes the client every few seconds with an empty message (shown as
                # nothing): when it has gone (Ctrl-C), the write fails and the container is removed at once
                # instead of running on for nobody.
                try:
                    ready = select.select([stream], [], [], _HEARTBEAT)[0]
                except (OSError, ValueError):
                    ready = [stream]
                if not ready:
                    self.b.out.emit({"stream": ""})
                    continue
                data = stream.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 8:
                    (size,) = struct.unpack(">I", buf[4:8])
                    if len(buf) < 8 + size:
                        break
                    payload, buf = buf[8 : 8 + size], buf[8 + size :]
                    tail = (tail + payload)[-_OUTPUT_TAIL:]
                    self.b.out.stream(payload.decode(errors="replace"))
        finally:
            with contextlib.suppress(Exception):
                stream.close()
        return tail

    # -- COPY / ADD -------------------------------------------------------------------------------------
    def copy_step(self, ins: Instruction, state: StageState) -> None:
        from .builder import BuildError

        esc, scope = self.df.escape, state.scope()
        words = [sub(ins, w, scope, esc) for w in ins.args]
        sources, dest = words[:-1], words[-1]
        chown = sub(ins, ins.flags["chown"], scope, esc) if "chown" in ins.flags else ""
        chmod = ins.flags.get("chmod", "")
        for src in sources:
            if _is_url(src):
                if ins.cmd == "COPY":
                    raise DockerfileError(ins.line, ins.cmd, f"source can't be a URL for COPY: {src}")
                raise BuildError(
                    f"ADD {src}: remote sources need internet access, which pymachine's VM does not have "
                    "(offline); "
                    "download the file into the build context and ADD or COPY it from there"
                )
        mode = None
        if chmod:
            try:
                mode = int(chmod, 8)
            except ValueError:
                raise DockerfileError(
                    ins.line, ins.cmd, f"invalid --chmod value {chmod!r}: expected octal"
                ) from None
        with contextlib.ExitStack() as stack:
            src_root, from_id = self.b.ctx, ""
            if "from" in ins.flags:
                from_id = self._from_image(ins, sub(ins, ins.flags["from"], scope, esc))
                layers = self.b.store.layer_dirs(from_id)
                src_root = stack.enter_context(readonly_rootfs(self.scratch_dir(), layers))
            try:
                paths = [p for s in sources for p in expand_sources(src_root, s)]
            except ContextError as exc:
                raise BuildError(f"{ins.cmd} failed: {exc}") from None
            extra = {
                "hash": hash_paths(src_root, paths, None if from_id else self.b.digests),
                "chown": chown,
                "chmod": chmod,
                "from": from_id,
                "workdir": state.config.get("WorkingDir") or "",
            }
            text = f"{ins.cmd} {json.dumps(sources)} {dest}"
            key = step_key(state.image_id or "scratch", text, extra)
            # Docker's history line for COPY/ADD names the content by hash (`file:<sha256> in /dst`), which is
            # what lets --cache-from match it; --from and --chmod change what lands, so they are named too
            kind = "file" if len(paths) == 1 and paths[0].is_file() else "dir" if len(paths) == 1 else "multi"
            flags = "".join(
                f"--{name}={value} "
                for name, value in (("chown", chown), ("chmod", chmod), ("from", from_id))
                if value
            )
            created_by = f"/bin/sh -c #(nop) {ins.cmd} {flags}{kind}:{extra['hash']} in {dest} "
            if self.cached(key, state, created_by):
                return
            work = self.scratch_dir()
            parent_layers = self.b.store.layer_dirs(state.image_id) if state.image_id else []
            with writable_rootfs(work, parent_layers) as ws:
                opts = CopyOptions(mode=mode, keep_owner=bool(from_id))
                if chown:
                    try:
                        user = resolve_user(chown, ws.rootfs)
                    except LookupError as exc:
                        raise BuildError(f"{ins.cmd} --chown={chown}: {exc}") from None
                    opts.uid = user.uid
                    # Docker: a user without a group gets the same numeric id as group
                    opts.gid = user.gid if ":" in chown else user.uid
                try:
                    copy_into(ws.rootfs, paths, dest, state.config.get("WorkingDir") or "/", opts,
                              extract=ins.cmd == "ADD" and not from_id)  # fmt: skip
                except (ContextError, OSError) as exc:
                    raise BuildError(f"{ins.cmd} failed: {exc}") from None
        new = self.b.store.commit(ws.upper, state.image_id, dict(state.config), created_by=created_by)
        shutil.rmtree(work, ignore_errors=True)
        self.record(key, new, state)

    def _from_image(self, ins: Instruction, ref: str) -> str:
        from .builder import BuildError

        try:
            index = self.df.stage_index(ref)
        except KeyError:
            index = -1
        if index >= 0:
            if index not in self.results:
                raise BuildError(f"{ins.cmd} --from={ref}: a stage can only copy from an earlier stage")
            image_id = self.results[index]
            if image_id is None:
                raise BuildError(f"{ins.cmd} --from={ref}: that stage produced no image (empty FROM scratch)")
            return image_id
        return self.b.ensure_image(ref)


def _is_url(src: str) -> bool:
    """A remote source (URL, git@, `x.git` or `x.git#ref`), which this builder does not fetch. Plain string
    tests: the regex `\\.git(#.*)?$` searched a long `.git#.git#…` line in quadratic time."""
    low = src.lower()
    if low.startswith(("http://", "https://", "ftp://", "git@")) or low.endswith(".git"):
        return True
    at = low.rfind(".git#")
    return at >= 0 and "\n" not in src[at:].removesuffix("\n")
