"""Hosts and VMs recorded straight in the database, for API tests that need a fleet without workers: a
host exists once it has sent a heartbeat, a VM once its row is there."""

from __future__ import annotations

import time
import uuid

from queues import messages
from web.extensions import db
from web.models import Vm
from web.services.hosts import record_heartbeat


def beat(name: str, arch: str = "amd64", accel: str = "tcg", emulators=("arm64",), memory_mib=4096, **extra) -> None:
    record_heartbeat(
        messages.heartbeat.load(
            {
                "host": name,
                "arch": arch,
                "accel": accel,
                "emulators": list(emulators),
                "queues": [arch, f"host.{name}"],
                "cpu_modes": {},
                "capacity": {"vcpus": 4, "memory_mib": memory_mib, "disk_mib": 10000},
                "allocated": {},
                "domains": extra.pop("domains", []),
                "started_at": 0.0,
                "migration": extra.pop("migration", {"address": f"10.0.0.{len(name)}", "ssh_port": 22}),
                "networks": extra.pop("networks", {"libvirt": ["archq"], "bridges": []}),
                "at": time.time(),
            }
        )
    )
    db.session.commit()


def add_vm(host: str = "a", state: str = "running", arch: str = "amd64", accel: str = "tcg", **fields) -> str:
    vm = Vm(
        id=str(uuid.uuid4()), name=f"mig-{uuid.uuid4().hex[:6]}", arch=arch, vcpus=1, memory_mib=128, image="tiny",
        state=state, host=host, accel=accel, emulated=fields.pop("emulated", False), **fields,
    )  # fmt: skip
    db.session.add(vm)
    db.session.commit()
    return vm.id
