#!/usr/bin/env bash
# Install pymachine from this checkout on a Debian/Ubuntu machine. Safe to run again: each step is idempotent.
#
#   sudo packaging/install.sh   system packages (the VM, the guest image build, the test tiers), the package in its
#                               own venv /opt/pymachine, `pymachine`/`pymachine-gui` in /usr/local/bin, the desktop
#                               entry, and libvirtd (through systemd where it runs, packaging/services.sh otherwise)
#   packaging/install.sh        as another user: a per-user venv under ${XDG_DATA_HOME:-~/.local/share}/pymachine,
#                               commands in ~/.local/bin; the system packages must be there (it names the missing)
#
# The package goes into a venv because Debian's python3 is "externally managed" (PEP 668) and refuses pip; the
# venv sees the system site-packages so Debian's python3-libvirt serves (nothing to compile). Environment:
#   PYMACHINE_PYTHON   the interpreter that makes the venv (default: python3 on PATH)
#   PYMACHINE_PREFIX   the venv (default: /opt/pymachine for root, the data home for a user)
#   PYMACHINE_NO_SERVICES=1   install only, start nothing (a chroot, an image build)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYMACHINE_PYTHON:-python3}"
say() { echo "==> $*"; }
die() { echo "error: $1" >&2; [ -z "${2:-}" ] || echo "hint: $2" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
    prefix="${PYMACHINE_PREFIX:-/opt/pymachine}"
    bindir=/usr/local/bin
    share=/usr/local/share
else
    data="${XDG_DATA_HOME:-$HOME/.local/share}"
    prefix="${PYMACHINE_PREFIX:-$data/pymachine/venv}"
    bindir="$HOME/.local/bin"
    share="$data"
fi

packages=(
    python3 python3-venv python3-libvirt            # the venv (ensurepip) and libvirt's binding from Debian
    qemu-system-x86 qemu-utils                       # the VM
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
    libvirt-dev pkg-config gcc python3-dev           # libvirt-python for an interpreter that is not Debian's
    mmdebstrap debootstrap e2fsprogs busybox-static cpio zstd dpkg-dev  # building the guest image
    openssh-client iproute2 iptables nftables uidmap procps  # SSH to the VM; the privileged test tier
    openssh-server                                   # a real sshd for the host agent's privileged tests (kept off)
    crun runc socat xvfb xauth curl                  # bench peers, GUI screenshots, the demo
    libegl1 libfontconfig1 libgl1 libxkbcommon0 libdbus-1-3  # PySide6's own imports
    libglib2.0-bin dbus                              # desktop notifications (gdbus) and their gui test
    libxcb-icccm4 libxcb-cursor0 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 libxcb-xkb1
    libxkbcommon-x11-0 libxcb-shape0 libxcb-randr0 libxcb-xinerama0 libxcb-xinput0  # Qt's xcb platform (GUI)
    docker-registry skopeo                           # a local OCI registry; skopeo for interop tests
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The docker client: Debian's docker-cli where the release has it (trixie, Ubuntu); bookworm has only docker.io,
# which brings the whole engine along (kept off below).
updated=""
if ! command -v docker >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -q >/dev/null && updated=1; fi
    if apt-cache show docker-cli >/dev/null 2>&1; then missing+=(docker-cli); else missing+=(docker.io); fi
fi

# Units a package enables on install that the user did not ask for: the test tiers start their own sshd and
# registry, and pymachine's engine runs in the VM, not in a dockerd on the host.
unwanted_units() {
    case "$1" in
    openssh-server) echo ssh.service ssh.socket ;;
    docker.io) echo docker.service docker.socket containerd.service ;;
    docker-registry) echo docker-registry.service ;;
    esac
}
unit_file() { [ -e "/lib/systemd/system/$1" ] || [ -e "/usr/lib/systemd/system/$1" ]; }

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        die "missing system packages: ${missing[*]}" \
            "sudo apt-get install --no-install-recommends ${missing[*]}   (or: sudo packaging/install.sh)"
    fi
    say "installing system packages: ${missing[*]}"
    # Only units this install brings are turned off: a containerd or sshd the machine had stays as it was.
    new_units=()
    for p in "${missing[@]}"; do
        for unit in $(unwanted_units "$p"); do unit_file "$unit" || new_units+=("$unit"); done
    done
    export DEBIAN_FRONTEND=noninteractive
    # Nothing starts while the packages install (policy-rc.d, the Debian way); what should run is started below.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    [ -n "$updated" ] || apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    for unit in "${new_units[@]}"; do
        unit_file "$unit" || continue
        if [ -d /run/systemd/system ]; then
            systemctl disable --now --quiet "$unit"
        elif command -v systemctl >/dev/null; then
            systemctl disable --quiet "$unit" # offline (a chroot, a container): removes the links only
        fi
    done
fi

if [ "$(id -u)" = 0 ] && ! id pymachine-qemu >/dev/null 2>&1; then
    # QEMU never runs as root: pymachine run by root starts it as this user (hostvm/qemu_user.py, which also
    # creates it on first use), in group kvm for /dev/kvm.
    say "creating the system user pymachine-qemu (QEMU's user when pymachine runs as root)"
    kvm=()
    if getent group kvm >/dev/null; then kvm=(--groups kvm); fi
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        "${kvm[@]}" pymachine-qemu
fi

# A venv that no longer runs (its interpreter was removed or upgraded away) is made again.
if ! "$prefix/bin/python" -c '' 2>/dev/null; then
    interpreter="$(command -v "$python")" || die "no Python interpreter '$python'" \
        "apt-get install python3 python3-venv, or name one: PYMACHINE_PYTHON=/usr/bin/python3"
    say "creating the virtual environment $prefix ($interpreter)"
    mkdir -p "$(dirname "$prefix")"
    "$python" -m venv --clear --system-site-packages "$prefix"
fi
say "installing the pymachine Python package into $prefix"
"$prefix/bin/python" -m pip install -q --disable-pip-version-check -e "$here[dev]"
"$prefix/bin/python" -c 'import pymachine.hostvm, pymachine_agent, PySide6.QtWidgets'

say "putting pymachine, pymachine-gui and git-remote-pymachine in $bindir, the desktop entry in $share/applications"
mkdir -p "$bindir" "$share/applications" "$share/icons/hicolor/scalable/apps"
for cmd in pymachine pymachine-gui git-remote-pymachine; do ln -sfn "$prefix/bin/$cmd" "$bindir/$cmd"; done
install -m 0644 "$here/packaging/linux/pymachine.desktop" "$share/applications/pymachine.desktop"
install -m 0644 "$here/packaging/linux/pymachine.svg" "$share/icons/hicolor/scalable/apps/pymachine.svg"
if command -v update-desktop-database >/dev/null; then update-desktop-database -q "$share/applications"; fi
case ":$PATH:" in *":$bindir:"*) ;; *) echo "note: $bindir is not on PATH; add it, or run $prefix/bin/pymachine" ;; esac

if [ "$(id -u)" = 0 ] && [ -z "${PYMACHINE_NO_SERVICES:-}" ]; then
    if [ -d /run/systemd/system ]; then
        say "enabling libvirtd through systemd"
        systemctl enable --now --quiet libvirtd.service
    else
        "$here/packaging/services.sh" libvirtd
    fi
fi
say "ready: run 'pymachine --help'; the tests: $prefix/bin/python -m pytest"
