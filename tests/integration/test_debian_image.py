"""The debian-12 guest image: built from Debian's packages once per architecture (tests/support/debian_image.py;
arm64 through qemu-user takes about ten minutes the first time), reused while its recipe and files verify,
and registered in the catalog by `archq images build`. archq boots it to SSH in tests/guests/test_debian_guests.py
(bench/guest_boot.py boots it with plain libvirt too, tests/support/raw_guest.py).

Needs root, mmdebstrap and qemu-user-static with binfmt_misc (arm64): what .ci/setup installs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrations import upgrade
from queues.arch import Arch
from queues.images import artifact_schema, built_artifacts
from tests.conftest import IMAGES_CACHE, settings_env
from tests.support.debian_image import debian_image
from workers.guest.build_cache import hash_file
from workers.guest.debian import ensure_debian_image, recipe_id

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module", params=["amd64", "arm64"])
def debian_image_dir(request: pytest.FixtureRequest) -> Path:
    return debian_image(request.param)


def test_the_built_image_is_what_its_manifest_says(debian_image_dir: Path):
    manifest = json.loads((debian_image_dir / "manifest.json").read_text())
    arch = debian_image_dir.name
    assert (manifest["arch"], manifest["recipe"], manifest["login_user"]) == (arch, recipe_id(Arch(arch)), "debian")
    assert manifest["cmdline"].startswith("root=/dev/vda rw console=" + ("ttyS0" if arch == "amd64" else "ttyAMA0"))
    for name, described in manifest["files"].items():
        path = debian_image_dir / name
        assert (hash_file(path), path.stat().st_size) == (described["sha256"], described["bytes"]), name
    assert manifest["virtual_size"] == 2 << 30


def test_a_cached_image_is_reused_without_a_rebuild(debian_image_dir: Path):
    disk = debian_image_dir / "disk.qcow2"
    before = disk.stat().st_ino
    started = time.monotonic()
    again = ensure_debian_image(Arch(debian_image_dir.name), IMAGES_CACHE)
    assert time.monotonic() - started < 5
    assert (again.directory, again.disk.stat().st_ino) == (debian_image_dir, before)


def test_the_catalog_artifact_is_valid_and_points_at_the_built_files(debian_image_dir: Path):
    arch = debian_image_dir.name
    artifact = built_artifacts(IMAGES_CACHE, "debian-12")[arch]
    loaded = artifact_schema.load(artifact)
    assert loaded["source"] == str(debian_image_dir / "disk.qcow2")
    assert (loaded["kernel"]["source"], loaded["login_user"]) == (str(debian_image_dir / "vmlinuz"), "debian")


def test_archq_images_build_reuses_the_cached_image_and_registers_it(settings):
    debian_image("amd64")
    upgrade(settings.database_url)
    env = {**os.environ, **settings_env(settings)}
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "images", "build", "debian-12", "--arch", "amd64"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "debian-12 amd64: reused" in done.stdout and "virtual size 2147483648 bytes" in done.stdout
    assert "image debian-12 registered for amd64" in done.stdout
