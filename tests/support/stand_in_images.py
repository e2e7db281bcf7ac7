"""A `tiny` image for tests whose guests never boot (the API, the conductor, workers on libvirt's test
driver): manifests as `archq images build tiny` writes them, over a few bytes of stand-in kernel and initrd
with their true sha256s. Making it takes milliseconds; building the real guest takes minutes on a clean
machine, so only the tests that boot one (marked `libvirtd` or `guest`) get the real one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from queues.arch import ALL
from workers.domain_xml import CONSOLES


def write_stand_in_tiny(images_dir: Path) -> Path:
    for arch in ALL:
        arch_dir = images_dir / "tiny" / arch.value
        arch_dir.mkdir(parents=True, exist_ok=True)
        digests = {}
        for name in ("vmlinuz", "initrd.img"):
            content = f"stand-in {name} for {arch.value}: never booted\n".encode()
            (arch_dir / name).write_bytes(content)
            digests[name] = hashlib.sha256(content).hexdigest()
        manifest = {
            "arch": arch.value,
            "cmdline": f"console={CONSOLES[arch]} loglevel=1 panic=-1",
            "kernel_sha256": digests["vmlinuz"],
            "initrd_sha256": digests["initrd.img"],
        }
        (arch_dir / "manifest.json").write_text(json.dumps(manifest))
    return images_dir
