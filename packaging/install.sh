#!/usr/bin/env bash
# Install everything pymachine needs on a Debian/Ubuntu machine (as root), then start the services it uses
# where no service manager does. Safe to run again: each step is idempotent.
#   packaging/install.sh          system packages + `pip install -e .[dev]` + libvirtd
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$(id -u)" != 0 ]; then
    echo "error: packaging/install.sh installs system packages and must run as root" >&2
    echo "hint: sudo packaging/install.sh" >&2
    exit 1
fi

packages=(
    qemu-system-x86 qemu-utils                       # the VM
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc python3-dev
    mmdebstrap debootstrap e2fsprogs busybox-static cpio zstd dpkg-dev  # building the guest image
    openssh-client iproute2 iptables nftables uidmap  # SSH to the VM; the privileged test tier on this host
    openssh-server                                   # a real sshd for the host agent's privileged tests (never enabled)
    crun runc socat xvfb xauth curl                   # bench peers, GUI screenshots, the demo
    libxcb-icccm4 libxcb-cursor0 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 libxcb-xkb1
    libxkbcommon-x11-0 libxcb-shape0 libxcb-randr0 libxcb-xinerama0 libxcb-xinput0  # Qt's xcb platform (GUI)
    docker-registry skopeo                             # a local OCI registry; skopeo for interop tests
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    # openssh-server is here for the test tiers only: a service manager must not leave an sshd running that
    # the user did not ask for (one that was already installed is not in "missing" and stays as it was)
    if [[ " ${missing[*]} " == *" openssh-server "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now ssh.service >/dev/null 2>&1 || true
    fi
fi
if ! command -v docker >/dev/null; then
    apt-get install -y -q --no-install-recommends docker-cli >/dev/null 2>&1 \
        || apt-get install -y -q --no-install-recommends docker.io >/dev/null
fi

# QEMU never runs as root: pymachine run by root starts it as this user (hostvm/qemu_user.py, which also creates
# it on first use), in group kvm for /dev/kvm.
if ! id pymachine-qemu >/dev/null 2>&1; then
    echo "==> creating the system user pymachine-qemu (QEMU's user when pymachine runs as root)"
    kvm=(); getent group kvm >/dev/null && kvm=(--groups kvm)
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        "${kvm[@]}" pymachine-qemu
fi

echo "==> installing the pymachine Python package"
python3 -m pip install -q --disable-pip-version-check -e "$here[dev]" 2>&1 | grep -v -e '^WARNING' -e 'ignored' || true
python3 -c 'import pymachine.hostvm, pymachine_agent' # fail loudly if the install did not take

"$here/packaging/services.sh" libvirtd
echo "==> ready: run 'pymachine --help'"
