#!/usr/bin/env bash
# Start the host services pymachine and its tests use, where no service manager (systemd) starts them.
# Safe to run again: a daemon whose pidfile names a live process of that name is left alone.
#   packaging/services.sh libvirtd      virtlogd + libvirtd, and /dev/kvm with Debian's udev permissions
#   packaging/services.sh xvfb          an X server on :99 for GUI screenshots
set -euo pipefail

# Liveness from the daemon's own pidfile, not pgrep (procps is absent on minimal systems) and not a name search
# in /proc (in a chroot that would find the host's daemons). A stale pidfile (a crashed daemon) reads as stopped.
alive() { # alive PIDFILE NAME
    local pid
    pid="$(tr -d ' \n' 2>/dev/null <"$1")" || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

wait_for() { # wait_for PATH: a daemon's socket or pidfile, up to 5 s
    for _ in $(seq 50); do [ -e "$1" ] && return 0; sleep 0.1; done
    echo "error: $1 did not appear" >&2
    return 1
}

for what in "$@"; do
    case "$what" in
    libvirtd)
        # Without udev /dev/kvm stays root 0600; libvirt's QEMU user then cannot open it and libvirt re-probes
        # QEMU's capabilities for ~48 s on every domain start. Debian's udev rule makes it root:kvm 0660.
        if [ -e /dev/kvm ] && getent group kvm >/dev/null; then chgrp kvm /dev/kvm; chmod 0660 /dev/kvm; fi
        mkdir -p /run/libvirt
        if ! alive /run/virtlogd.pid virtlogd; then virtlogd -d; fi
        if ! alive /run/libvirtd.pid libvirtd; then
            # below a subreaper: a QEMU that exits is reaped at once, not whenever PID 1 gets to it (libvirt
            # waits for that at every save, shutdown and destroy; see subreaper.py)
            python3 "$(dirname "$0")/subreaper.py" libvirtd -d
            wait_for /run/libvirt/libvirt-sock
        fi
        ;;
    xvfb)
        # Xvfb writes its pid into the display's lock file, /tmp/.X99-lock.
        if ! alive /tmp/.X99-lock Xvfb; then
            (Xvfb :99 -screen 0 1280x800x24 -nolisten tcp >/tmp/xvfb.log 2>&1 &)
            wait_for /tmp/.X11-unix/X99
        fi
        ;;
    *) echo "error: unknown service '$what' (libvirtd, xvfb)" >&2; exit 2 ;;
    esac
done
