#!/usr/bin/env bash
# Build the wheel and pymachine_VERSION_ARCH.deb from this checkout, into OUTDIR (default: dist/).
#   packaging/linux/build-deb.sh [OUTDIR]
#
# The .deb carries its own venv at /opt/pymachine, made with Debian's python3 (3.11 on Debian 12), holding the
# wheel and every Python dependency (PySide6 included), so that it never pip-installs into the system
# interpreter (PEP 668). The venv also sees the system site-packages, for Debian's python3-libvirt. Commands in
# /usr/bin, the desktop entry and icon under /usr/share. Needs: Debian's python3 with python3-venv, dpkg-deb,
# and PyPI (or a pip mirror) for the dependencies. Install with `apt install ./pymachine_*.deb`.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(mkdir -p "${1:-$here/dist}" && cd "${1:-$here/dist}" && pwd)"
python=/usr/bin/python3 # the target's interpreter: the venv links to it
prefix=/opt/pymachine

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
version="$("$python" -c 'import tomllib; print(tomllib.load(open("'"$here"'/pyproject.toml", "rb"))["project"]["version"])')"
arch="$(dpkg --print-architecture)"
next="${pyver%.*}.$((${pyver#*.} + 1))"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

echo "==> wheel"
"$python" -m venv "$stage/build-venv"
"$stage/build-venv/bin/python" -m pip wheel -q --no-deps -w "$out" "$here"
wheel="$(ls -t "$out"/pymachine-"$version"-*.whl | head -1)"

echo "==> venv $prefix (Python $pyver) with $(basename "$wheel") and its dependencies"
root="$stage/root"
# Made without the system site-packages so that every dependency lands in the venv (a package that happens to
# be installed on the build host must not go missing on the target); switched on afterwards for python3-libvirt.
"$python" -m venv "$root$prefix"
"$root$prefix/bin/python" -m pip install -q --no-compile --no-warn-script-location "$wheel[gui]"
sed -i 's/^include-system-site-packages = false$/include-system-site-packages = true/' "$root$prefix/pyvenv.cfg"
# The venv was made under the staging folder: its scripts' shebangs and activate files name it.
grep -rlI --null "$root$prefix" "$root$prefix/bin" | xargs -0 sed -i "s|$root$prefix|$prefix|g"
# Byte code is compiled on the target (postinst) and removed before removal (prerm): nothing stays behind.
find "$root$prefix" -name __pycache__ -prune -exec rm -rf {} +

mkdir -p "$root/usr/bin" "$root/usr/share/applications" "$root/usr/share/icons/hicolor/scalable/apps"
for cmd in pymachine pymachine-gui git-remote-pymachine; do ln -s "$prefix/bin/$cmd" "$root/usr/bin/$cmd"; done
install -m 0644 "$here/packaging/linux/pymachine.desktop" "$root/usr/share/applications/"
install -m 0644 "$here/packaging/linux/pymachine.svg" "$root/usr/share/icons/hicolor/scalable/apps/"

mkdir -p "$root/DEBIAN"
qt_libs="libegl1, libfontconfig1, libgl1, libxkbcommon0, libdbus-1-3, libxkbcommon-x11-0, libxcb-cursor0,
 libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-render-util0, libxcb-shape0, libxcb-randr0,
 libxcb-xinerama0, libxcb-xinput0, libxcb-xkb1"
cat >"$root/DEBIAN/control" <<EOF
Package: pymachine
Version: $version
Architecture: $arch
Section: utils
Priority: optional
Maintainer: pymachine developers <pymachine@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: python3 (>= $pyver), python3 (<< $next), python3-libvirt, qemu-system-x86, qemu-utils, openssh-client,
 $qt_libs
Recommends: libvirt-daemon-system, libvirt-daemon-driver-qemu, mmdebstrap, e2fsprogs, busybox-static, cpio, zstd,
 libglib2.0-bin
Suggests: docker-cli | docker.io
Description: desktop container runner: containers in a small Linux VM
 pymachine runs containers inside a lightweight Linux VM (libvirt/QEMU), with a
 Docker-Engine-compatible API forwarded to the host for the docker CLI,
 docker-py and compose, and a desktop app. Its Python environment lives in
 $prefix.
EOF
cat >"$root/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    $prefix/bin/python -m compileall -q $prefix/lib >/dev/null || true  # speed only: the code runs without
fi
EOF
cat >"$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
find $prefix -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm"

deb="$out/pymachine_${version}_${arch}.deb"
echo "==> $deb"
# gzip: quick to build (the venv is mostly Qt) and every dpkg reads it
dpkg-deb --root-owner-group -Zgzip -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
