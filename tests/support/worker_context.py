"""A worker context on the in-memory hypervisor: the host, its directories and settings, no libvirt."""

from __future__ import annotations

from pathlib import Path

from queues.arch import Arch
from queues.config import Settings
from queues.vocabulary import Accel
from tests.support.fake_hypervisor import FakeHypervisor
from workers.host import HostProfile
from workers.operations import WorkerContext


def fake_context(tmp_path: Path, hypervisor: FakeHypervisor | None = None, **settings: object) -> WorkerContext:
    profile = HostProfile(
        name="h1", arch=Arch.AMD64, accel=Accel.TCG, emulators=(Arch.ARM64,), vcpus=4, memory_mib=4096
    )
    return WorkerContext(
        host=profile,
        hypervisor=hypervisor or FakeHypervisor(),
        data_dir=tmp_path / "data",
        images_dir=tmp_path / "images",
        stop_timeout_s=1,
        settings=Settings(data_dir=tmp_path / "data", **settings),  # type: ignore[arg-type]
    )
