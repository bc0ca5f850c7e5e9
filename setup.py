"""Map the fixed product layout onto import names.

`app/` and `hostvm/` become `pymachine.app` and `pymachine.hostvm` (nothing generic such as a bare `app`
lands at the top of site-packages); `images/` ships as `pymachine.images` because the host builds the
guest image from those recipes; the guest agent keeps its own top-level name, `pymachine_agent`, since it
runs alone inside the VM on the guest's Python and never imports host code.
"""

from pathlib import Path

from setuptools import setup

ROOTS = {
    "pymachine.app": "app",
    "pymachine.hostvm": "hostvm",
    "pymachine.images": "images",
    "pymachine_agent": "guest-agent/pymachine_agent",
}
HERE = Path(__file__).parent


def discover() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for name, folder in ROOTS.items():
        root = HERE / folder
        package_dir[name] = folder
        for init in sorted(root.rglob("__init__.py")):
            rel = init.parent.relative_to(root)
            packages.append(".".join([name, *rel.parts]) if rel.parts else name)
    return packages, package_dir


packages, package_dir = discover()
setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"pymachine.images": ["**/*"], "pymachine_agent": ["**/*.json"]},
    include_package_data=True,
)
