# NOT YET VERIFIED: no macOS host in CI (docs/packaging.md). A Homebrew formula sketch for pymachine from a
# release tarball: a virtualenv in libexec, QEMU from Homebrew (HVF acceleration is QEMU's `-accel hvf`,
# which hostvm/accel.py picks on macOS). Fill in url/sha256 at release.
class Pymachine < Formula
  include Language::Python::Virtualenv

  desc "Desktop container runner: containers in a small Linux VM with a Docker-compatible API"
  homepage "https://example.invalid/pymachine"
  url "https://example.invalid/pymachine-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "Apache-2.0"

  depends_on "python@3.12"
  depends_on "qemu"
  depends_on "libvirt" => :optional # the direct-QEMU driver serves without it

  def install
    # PyPI dependencies (paramiko, docker, requests, watchdog) would be listed as `resource` blocks,
    # generated with `brew update-python-resources pymachine` at release.
    virtualenv_install_with_resources
  end

  service do
    # `brew services start pymachine`: the default machine at login (the LaunchAgent in this folder does the
    # same without Homebrew).
    run [opt_bin/"pymachine", "start", "default"]
    keep_alive false
    log_path var/"log/pymachine.log"
    error_log_path var/"log/pymachine.log"
  end

  test do
    system bin/"pymachine", "version"
    system bin/"pymachine", "doctor"
  end
end
