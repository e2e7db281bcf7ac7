"""The debian-12 guest image for tests and benchmarks: built once per architecture into the shared test cache
(tests.conftest IMAGES_CACHE; the amd64 build takes about a minute, arm64 through qemu-user about ten), reused
after as long as its recipe and files verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from queues.arch import Arch
from tests.conftest import IMAGES_CACHE
from workers.guest.debian import ensure_debian_image


def debian_image(arch: str) -> Path:
    """The directory holding disk.qcow2, vmlinuz, initrd.img and manifest.json of `arch`'s debian-12 image."""
    return ensure_debian_image(Arch(arch), IMAGES_CACHE).directory


@pytest.fixture(scope="session", params=["amd64", "arm64"])
def debian_image_dir(request: pytest.FixtureRequest) -> Path:
    """debian_image for each architecture in turn (tests using it run once per arch); import it into a test
    module, or define a fixture of its own around debian_image()."""
    return debian_image(request.param)
