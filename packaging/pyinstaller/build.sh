#!/usr/bin/env bash
# Build the PyInstaller one-folder bundle (OUTDIR/pymachine/: `pymachine`, `pymachine-gui`, `git-remote-pymachine`
# and their Python and Qt) from this checkout.
#   packaging/pyinstaller/build.sh [OUTDIR]      (default: dist/)
# The package is installed from its wheel into a throwaway venv (PyInstaller cannot follow an editable
# install); on Debian the venv sees the system site-packages for python3-libvirt, which the bundle then carries.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(mkdir -p "${1:-$here/dist}" && cd "${1:-$here/dist}" && pwd)"
python="${PYMACHINE_PYTHON:-/usr/bin/python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip wheel -q --no-deps -w "$work/wheel" "$here"
"$work/venv/bin/python" -m pip install -q --no-warn-script-location "$(ls "$work"/wheel/pymachine-*.whl)[gui]" \
    'pyinstaller>=6.5'
"$work/venv/bin/pyinstaller" --noconfirm --clean --log-level WARN --distpath "$out" --workpath "$work/build" \
    "$here/packaging/pyinstaller/pymachine.spec"
echo "$out/pymachine"
