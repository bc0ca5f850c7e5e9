"""The container's root filesystem, built inside its own mount namespace just before pivot_root.

overlayfs of the image layers + the container's upper/work dirs, then Docker's default mounts (/proc,
read-only /sys, a tmpfs /dev with bind-mounted device nodes, /dev/pts, /dev/shm, /dev/mqueue, cgroup2), the
/etc files, the user's bind/volume/tmpfs mounts, pivot_root, and finally the masked and read-only /proc paths.
Everything is mounted in the container's private namespace, so nothing leaks to the guest and nothing needs
unmounting when the container exits.

Unless the container is privileged, every filesystem it can write to or bring in is `nodev` (the rootfs,
/dev, volumes and bind mounts with all their submounts): a device node made with mknod (CAP_MKNOD is one of
Docker's default capabilities) or shipped in an image layer cannot be opened. The usable nodes are made in a
private tmpfs outside the rootfs and bind-mounted into /dev (see _make_nodes). The device cgroup program
(devices.py) is the second wall.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pymachine_agent import atomic, inroot, mountinfo
from pymachine_agent.runtime import devices, libc, sysctls
from pymachine_agent.runtime.spec import ContainerSpec, Mount

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
NOSUID_NODEV_NOEXEC = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
# on a bind from a host share (the engine's shares.py): that share, which must be mounted whenever the bind is
# made, so a restart while it is gone (sshfs not yet mounted after a reboot) fails instead of binding an empty
# mountpoint
SHARE_OPTION = "x-share="


def secure_join(root: str, path: str) -> str:
    """`path` inside `root` with every symlink resolved as if `root` were "/", so that an image's symlink can
    never send a mount outside the container's root."""
    return inroot.resolve(root, path)


def _ensure(path: str, is_dir: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        with open(path, "a"):
            pass


def _bind(source: str, target: str, readonly: bool, extra_flags: int = 0, rec: bool = True) -> None:
    libc.mount(source, target, None, libc.MS_BIND | (libc.MS_REC if rec else 0))
    if readonly or extra_flags:
        flags = libc.MS_BIND | libc.MS_REMOUNT | extra_flags | (libc.MS_RDONLY if readonly else 0)
        libc.mount(None, target, None, flags)


def mount_overlay(layers: list[str], upper: str, work: str, target: str, flags: int = 0) -> None:
    if not layers:
        raise ValueError("a container needs at least one image layer")
    # overlayfs wants the top-most lower layer first.
    lower = ":".join(reversed(layers))
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(data) >= 4000:  # the mount data is one page; overlay has no other way to take many layers
        raise OSError(7, f"too many image layers for one overlay mount ({len(layers)})")
    libc.mount("overlay", target, "overlay", flags, data)


def _make_nodes(root: str, ctr_dir: str, nodes: list[devices.HostDevice], privileged: bool) -> None:
    """Create the container's device nodes, as runc does with mknod, owned and moded like their guest nodes.

    Privileged: straight into the container's /dev, a tmpfs that allows devices (Docker's way). Otherwise the
    container's /dev is nodev, so each node is made in a fresh tmpfs (not nodev) at ctr_dir/devices, mounted
    only in the container's namespace and dropped from view with the old root at pivot_root, and bind-mounted
    to its place: a bind keeps the mount flags of its source, so these nodes open and nothing else does. The
    container owns its nodes (a chmod inside does not reach the guest's /dev, as a bind of the guest's own
    node would), and the container cannot add a node to that tmpfs."""
    if not privileged:
        store = os.path.join(ctr_dir, "devices")
        os.makedirs(store, exist_ok=True)
        libc.mount("tmpfs", store, "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC, "mode=700,size=64k")
    for i, node in enumerate(nodes):
        target = secure_join(root, node.path)
        if privileged and os.path.lexists(target):
            continue  # dockerd skips a --device that names a node the guest's /dev already gave
        kind = stat.S_IFCHR if node.type == "c" else stat.S_IFBLK
        made = target if privileged else os.path.join(store, str(i))
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.mknod(made, kind | 0o600, os.makedev(node.major, node.minor))
        os.chown(made, node.uid, node.gid)
        os.chmod(made, node.mode)
        if not privileged:
            _ensure(target, False)
            libc.mount(made, target, None, libc.MS_BIND)


def _mount_dev(root: str, spec: ContainerSpec, ctr_dir: str) -> None:
    dev = secure_join(root, "/dev")
    _ensure(dev, True)
    nodev = 0 if spec.privileged else libc.MS_NODEV
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_STRICTATIME | nodev, "mode=755,size=65536k")
    found = devices.resolve_all(spec.devices)
    if spec.privileged:
        _make_nodes(root, ctr_dir, devices.guest_devices() + found, True)
    else:
        _make_nodes(root, ctr_dir, [*devices.DEFAULT_NODES, *found], False)
    pts = os.path.join(dev, "pts")
    os.mkdir(pts)
    libc.mount(
        "devpts", pts, "devpts", libc.MS_NOSUID | libc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"
    )
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm)
    libc.mount("shm", shm, "tmpfs", NOSUID_NODEV_NOEXEC, f"mode=1777,size={spec.shm_size or 65536 * 1024}")
    mq = os.path.join(dev, "mqueue")
    os.mkdir(mq)
    libc.mount("mqueue", mq, "mqueue", NOSUID_NODEV_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):  # fmt: skip
        os.symlink(target, os.path.join(dev, name))
    if spec.tty:  # the pty's slave is bound here once it exists (process.open_console)
        _ensure(os.path.join(dev, "console"), False)


def _mount_user(root: str, m: Mount, privileged: bool) -> None:
    target = secure_join(root, m.target)
    if m.type == "tmpfs":
        _ensure(target, True)
        opts = ",".join(o for o in m.options if o not in ("ro", "rw")) or None
        flags = NOSUID_NODEV_NOEXEC & ~libc.MS_NOEXEC | (libc.MS_RDONLY if m.readonly else 0)
        libc.mount("tmpfs", target, "tmpfs", flags, opts)
        return
    if m.type not in ("bind", "volume"):
        raise ValueError(f"unsupported mount type {m.type!r} for {m.target}")
    share = next((o[len(SHARE_OPTION) :] for o in m.options if o.startswith(SHARE_OPTION)), "")
    if share and not is_mountpoint(share):
        raise FileNotFoundError(f"share {share} is not mounted in the VM, so {m.source} cannot be bound")
    if not os.path.exists(m.source):
        raise FileNotFoundError(f"bind source path does not exist: {m.source}")
    source_fd = open_bind_source(m.source, share) if share else -1
    try:
        # a share's source is bound through its fd (as runc binds through /proc/self/fd), so what is bound is
        # what open_bind_source checked, not whatever the path names by the time mount(2) walks it
        source = f"/proc/self/fd/{source_fd}" if source_fd >= 0 else m.source
        _ensure(target, os.path.isdir(source))
        _bind(source, target, m.readonly, 0 if privileged else libc.MS_NODEV | libc.MS_NOSUID)
    finally:
        if source_fd >= 0:
            os.close(source_fd)
    if not privileged:
        _nodev_below(target)
    propagation = next((o for o in m.options if o.lstrip("r") in ("private", "shared", "slave")), "rprivate")
    flag = {"private": libc.MS_PRIVATE, "slave": libc.MS_SLAVE, "shared": 1 << 20}[propagation.lstrip("r")]
    libc.mount(None, target, None, flag | (libc.MS_REC if propagation.startswith("r") else 0))


def open_bind_source(source: str, share: str) -> int:
    """An O_PATH fd of a bind source that lies in a share, which cannot lead out of the share.

    Whoever can write in a share (the host user, a container that has it mounted) can swap a folder for a
    link to the VM's `/` between the engine's check at create/start and this mount: bound by path, the next
    container would get the VM's root. The path is resolved once (links that stay in the share are fine), must
    still lie in the share, and is opened below the share's fd with the share as `/` (openat2
    RESOLVE_IN_ROOT, or inroot's no-follow walk), so a swap after the check resolves inside the share."""
    rel = os.path.relpath(os.path.realpath(source), share)
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        raise PermissionError(f"bind source {source} leads out of the share {share}")
    share_fd = os.open(share, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return inroot.open_in_root(share_fd, rel, os.O_PATH)
    finally:
        os.close(share_fd)


def is_mountpoint(path: str) -> bool:
    """`path` is where something is mounted: read from /proc/self/mountinfo, which also knows a bind mount
    from its own filesystem (os.path.ismount compares devices, and a bind shares its source's)."""
    try:
        return any(point == path for point, _fstype in mountinfo.mounts())
    except OSError:
        return os.path.ismount(path)


def _nodev_below(target: str) -> None:
    """nodev on the mounts a recursive bind brought along (`-v /dev:/d` brings the guest's devpts, `-v /:/h`
    every guest filesystem): the remount in _bind changed the top one only."""
    try:
        libc.mount_setattr_recursive(target, libc.MOUNT_ATTR_NODEV)
    except OSError as e:
        if e.errno != errno.ENOSYS:  # kernels before 5.12: only the top mount is nodev
            raise


def setup_rootfs(spec: ContainerSpec, ctr_dir: str, cgroup_v2: bool) -> None:
    """Build the container's root at ctr_dir/rootfs and pivot_root into it. Runs in the container's init,
    after unshare(CLONE_NEWNS) (and in its pid namespace, for /proc)."""
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    root = os.path.join(ctr_dir, "rootfs")
    # nodev, not nosuid: an image's setuid binaries work as in Docker; its device nodes do not
    nodev = 0 if spec.privileged else libc.MS_NODEV
    mount_overlay(spec.layers, os.path.join(ctr_dir, "upper"), os.path.join(ctr_dir, "work"), root, nodev)
    proc = secure_join(root, "/proc")
    _ensure(proc, True)
    libc.mount("proc", proc, "proc", NOSUID_NODEV_NOEXEC)
    _mount_dev(root, spec, ctr_dir)
    sys_dir = secure_join(root, "/sys")
    _ensure(sys_dir, True)
    sys_flags = NOSUID_NODEV_NOEXEC | (0 if spec.privileged else libc.MS_RDONLY)
    try:
        libc.mount("sysfs", sys_dir, "sysfs", sys_flags)
    except PermissionError:  # host network namespace we do not own: bind the guest's /sys instead
        _bind("/sys", sys_dir, not spec.privileged)
    if cgroup_v2:
        cg = os.path.join(sys_dir, "fs/cgroup")
        if os.path.isdir(cg):
            libc.mount("cgroup", cg, "cgroup2", sys_flags)
    for target, source in sorted(spec.etc_files.items()):
        path = secure_join(root, target)
        _ensure(path, False)
        libc.mount(source, path, None, libc.MS_BIND)
    for m in sorted(spec.mounts, key=lambda m: m.target.count("/")):
        _mount_user(root, m, spec.privileged)
    if spec.readonly_rootfs:
        libc.mount(None, root, None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | nodev)
    _pivot(root)
    # namespaced keys only, in namespaces of the container's own: refused here too, whatever the API let by
    sysctls.write(spec.sysctls, spec.network in ("new", "none"), spec.ipc in ("private", "shareable"))
    if not spec.privileged:
        mask_paths()


def _pivot(root: str) -> None:
    """pivot_root(".", ".") then detach the old root stacked underneath (runc's and crun's way: no
    put_old directory inside the container)."""
    fd = os.open(root, os.O_DIRECTORY | os.O_RDONLY)
    try:
        os.fchdir(fd)
        libc.pivot_root(".", ".")
        libc.mount(None, ".", None, libc.MS_SLAVE | libc.MS_REC)
        libc.umount2(".", libc.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(fd)


def mask_paths() -> None:
    for path in MASKED_PATHS:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            libc.mount("tmpfs", path, "tmpfs", libc.MS_RDONLY, None)
        else:
            libc.mount("/dev/null", path, None, libc.MS_BIND)
    for path in READONLY_PATHS:
        if os.path.exists(path):
            _bind(path, path, True, libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)


def write_etc_defaults(spec: ContainerSpec, ctr_dir: str) -> None:
    """The /etc/hostname, /etc/hosts and /etc/resolv.conf a container gets unless the engine supplies its own
    (in spec.etc_files)."""
    hostname = spec.hostname or spec.id[:12]
    files = {
        "/etc/hostname": hostname + "\n",
        "/etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"127.0.1.1\t{hostname}\n",
    }
    try:
        files["/etc/resolv.conf"] = Path("/etc/resolv.conf").read_text()
    except OSError:
        files["/etc/resolv.conf"] = ""
    for target, content in files.items():
        if target in spec.etc_files:
            continue
        path = os.path.join(ctr_dir, target.rsplit("/", 1)[1])
        atomic.write_text(path, content, durable=False)
        spec.etc_files[target] = path
