"""Every host module (hostvm, the CLI, the app) imports on Windows and macOS: no unix-only module at the top.

This machine is Linux, so each platform is simulated in a subprocess: the third-party and standard modules the
host code uses are imported first under the real platform (they pick their own backends), then `sys.platform`
is set to the target and the unix-only modules are removed and blocked (on win32), and every pymachine host
module is imported. What this proves: the import graph; what it cannot: that the Windows code paths work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Modules that do not exist on Windows: an import of one of them at a module's top breaks the CLI there.
UNIX_ONLY = ("fcntl", "termios", "pwd", "grp", "resource", "pty", "tty", "posix", "_posixsubprocess")
PACKAGES = ("pymachine.hostvm", "pymachine.app")

WALK = """
import importlib, json, pkgutil, sys
def walk():
    names = []
    for pkg in %(packages)r:
        mod = importlib.import_module(pkg)
        names.append(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return names
"""

BASELINE = (
    WALK
    + """
names = walk()
for n in names:
    importlib.import_module(n)
print(json.dumps({"ours": names, "deps": sorted(m for m in sys.modules if not m.startswith("pymachine"))}))
"""
)

SIMULATE = """
import importlib, importlib.abc, json, sys
sys.path[:0] = %(path)r
baseline = json.loads(sys.stdin.read())
for dep in baseline["deps"]:
    try:
        importlib.import_module(dep)
    except Exception:
        pass
blocked = set(%(blocked)r)
for name in blocked:
    sys.modules.pop(name, None)
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.platform = %(platform)r
failed = {}
for name in baseline["ours"]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def _run(code: str, stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def baseline() -> str:
    return _run(BASELINE % {"packages": PACKAGES})


@pytest.mark.parametrize(("platform", "blocked"), [("win32", UNIX_ONLY), ("darwin", ())])
def test_every_host_module_imports_on(platform: str, blocked: tuple[str, ...], baseline: str) -> None:
    assert len(json.loads(baseline)["ours"]) > 40  # the walk found the host code, not an empty package
    code = SIMULATE % {"path": [], "blocked": blocked, "platform": platform}
    failed = json.loads(_run(code, baseline))
    assert failed == {}


def test_the_simulation_catches_a_top_level_fcntl(tmp_path: Path) -> None:
    """The shim itself: a module that imports fcntl at its top fails under win32, as it would on Windows."""
    (tmp_path / "portable_probe.py").write_text("import fcntl\n")
    code = SIMULATE % {"path": [str(tmp_path)], "blocked": UNIX_ONLY, "platform": "win32"}
    failed = json.loads(_run(code, json.dumps({"ours": ["portable_probe"], "deps": []})))
    assert failed == {"portable_probe": "ModuleNotFoundError: No module named 'fcntl'"}
