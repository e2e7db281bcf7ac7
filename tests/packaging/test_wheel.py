"""The wheel (what the Dockerfile and a `pip install` ship) carries what archq reads from its own files at run
time: the migrations, the guest scripts, the web UI's templates and xterm.js for the console page."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_migrations_templates_and_xterm(tmp_path: Path):
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    litter = (".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".*_cache")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*litter), symlinks=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("archq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "migrations/script.py.mako",
        "web/ui/templates/ui/base.html",
        "web/ui/xterm/node_modules/@xterm/xterm/lib/xterm.js",
        "web/ui/xterm/node_modules/@xterm/xterm/css/xterm.css",
    ):
        assert expected in names, f"{expected} is not in {wheel.name}"
