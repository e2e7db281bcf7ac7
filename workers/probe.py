"""The accelerator probe: boot the tiny guest once under KVM and see whether it reaches userspace."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from pathlib import Path

from queues.arch import Arch
from workers.domain_xml import DomainSpec, build_domain_xml
from workers.guest.tiny import TinyGuestError, ensure_tiny_guest, marker_line
from workers.hypervisor import Hypervisor

log = logging.getLogger(__name__)


def accelerator_boots(hypervisor: Hypervisor, arch: Arch, accelerator: str, images_dir: Path, timeout_s: float) -> bool:
    try:
        guest = ensure_tiny_guest(arch, images_dir)
    except TinyGuestError:
        log.warning("cannot build the tiny guest for the %s probe; assuming it does not work", accelerator)
        return False
    with tempfile.TemporaryDirectory(prefix="archq-probe-") as tmp:
        Path(tmp).chmod(0o755)
        serial = Path(tmp) / "console.log"
        spec = DomainSpec(
            uuid=str(uuid.uuid4()),
            name=f"probe-{accelerator}-{uuid.uuid4().hex[:8]}",
            arch=arch,
            vcpus=1,
            memory_mib=128,
            kernel=guest.kernel,
            initrd=guest.initrd,
            cmdline=guest.cmdline,
            serial_log=serial,
            domain_type=accelerator,
        )
        with hypervisor.transient(build_domain_xml(spec)) as started:
            if not started:
                return False
            deadline = time.monotonic() + timeout_s
            expected = marker_line(arch)
            while time.monotonic() < deadline:
                if serial.exists() and expected in serial.read_text(errors="replace"):
                    return True
                time.sleep(0.2)
            return False
