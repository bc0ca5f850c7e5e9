#!/usr/bin/env bash
# Start the host services pymachine and its tests use, where no service manager (systemd) starts them.
#   packaging/services.sh libvirtd      virtlogd + libvirtd, and /dev/kvm with Debian's udev permissions
#   packaging/services.sh xvfb          an X server on :99 for GUI screenshots
set -euo pipefail
for what in "$@"; do
    case "$what" in
    libvirtd)
        # Without udev /dev/kvm stays root 0600; libvirt's QEMU user then cannot open it and libvirt re-probes
        # QEMU's capabilities for ~48 s on every domain start. Debian's udev rule makes it root:kvm 0660.
        if [ -e /dev/kvm ] && getent group kvm >/dev/null; then chgrp kvm /dev/kvm; chmod 0660 /dev/kvm; fi
        if ! pgrep -x libvirtd >/dev/null; then
            mkdir -p /run/libvirt
            pgrep -x virtlogd >/dev/null || virtlogd -d
            libvirtd -d
            for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done
        fi
        ;;
    xvfb)
        if ! pgrep -x Xvfb >/dev/null; then
            (Xvfb :99 -screen 0 1280x800x24 -nolisten tcp >/tmp/xvfb.log 2>&1 &)
        fi
        ;;
    *) echo "error: unknown service '$what' (libvirtd, xvfb)" >&2; exit 2 ;;
    esac
done
