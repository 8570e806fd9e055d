"""The wheel carries what the compiler reads besides its code (compiler/resources.py lists it):
the presets, the manifest's schema, the bundled runtime and the extension's pages. They live
in the repository's models/ and web/ folders, so the build copies them into the package's
share/ folder. The runtime bundle is made by npm (web/build.mjs) when it is not there yet."""

import importlib.util
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("resources", HERE / "compiler" / "resources.py")
resources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(resources)


def bundle_runtime() -> None:
    """Bundles the runtime into web/build/ if it is missing (a fresh clone)."""
    if (HERE / "web" / "build" / "kiln.js").is_file():
        return
    if shutil.which("npm") is None:
        raise SystemExit("building Kiln needs the bundled runtime (web/build/): install Node.js")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE / "web", check=True)
    subprocess.run(["npm", "run", "build"], cwd=HERE / "web", check=True)


class BuildPy(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's files themselves
            return
        bundle_runtime()
        share = Path(self.build_lib) / "compiler" / "share"
        shutil.rmtree(share, ignore_errors=True)
        for name, source in resources.SOURCES.items():
            path = HERE / source
            if path.is_dir():
                # The runtime folder's site pages and chunks all ship: the build writes them
                # beside model folders.
                shutil.copytree(path, share / name, ignore=shutil.ignore_patterns(".*"))
            else:
                share.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, share / name)


class Sdist(sdist):
    def run(self):
        bundle_runtime()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
