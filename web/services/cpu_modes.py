"""Whether the host a create goes to can give the VM the CPU mode it asked for (from the `cpu_modes` each
host reports from libvirt's domain capabilities). Only hardware-accelerated guests use the mode: under TCG
archq uses its TCG CPU (queues/emulation.py), so an emulated or TCG guest never fails this check."""

from __future__ import annotations

from sqlalchemy import false, or_, select

from queues.arch import Arch
from queues.config import Settings
from queues.emulation import default_tcg_cpu
from queues.emulation import tcg_cpu as find_tcg_cpu
from queues.vocabulary import Accel
from web.errors import Conflict, Unprocessable
from web.extensions import db
from web.models import Host
from web.services.capacity import live_since
from web.services.vm_flags import tcg_model_reason

# A refusal names this many of the hosts that lack the mode.
NAMES_SHOWN = 10


def lacks_mode(host: Host, arch: Arch, mode: str) -> bool:
    """True when `host` would run an `arch` guest accelerated and says it cannot use `mode`. A host that
    reported no modes (captured capabilities, the test driver) is not judged."""
    if Arch(host.arch) != arch or host.accel == Accel.TCG:
        return False
    modes = (host.cpu_modes or {}).get(arch.value)
    return bool(modes) and mode not in modes


def check_cpu_mode(
    mode: str, arch: Arch, *, host: str | None, accel: str | None, pinned: bool, settings: Settings
) -> None:
    """Raise when the VM's host (chosen or pinned) or, for a queue whose hosts all accelerate, every live
    native host lacks `mode`: 422 for a pinned host (the request is wrong for it), 409 otherwise (the fleet
    cannot, for now)."""
    if accel in (None, Accel.TCG) and host is None:
        return
    if host is not None:
        row = db.session.get(Host, host)
        if row is not None and lacks_mode(row, arch, mode):
            message = (
                f"host {host!r} cannot run {arch} guests with cpu_mode {mode} (it supports: "
                f"{', '.join(row.cpu_modes[arch.value])}); choose another cpu_mode or host"
            )
            if pinned:
                raise Unprocessable(message, code="cpu_mode_unsupported", fields={"cpu_mode": [message]})
            raise Conflict(message, code="cpu_mode_unsupported", fields={"cpu_mode": [message]})
        return
    # One indexed probe for a live native accelerated host that can give the mode (or reported none); only a
    # refusal lists the hosts.
    natives = select(Host.name).where(
        Host.last_seen >= live_since(settings),
        Host.arch == arch.value,
        Host.accel != Accel.TCG,
        Host.drained == false(),
    )
    able = or_(Host.cpu_modes_own == "", Host.cpu_modes_own.contains(f"|{mode}|", autoescape=True))
    if db.session.execute(natives.where(able).limit(1)).first() is not None:
        return
    names = db.session.scalars(natives.order_by(Host.name).limit(NAMES_SHOWN + 1)).all()
    if names:
        shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
        message = f"no live accelerated {arch} host supports cpu_mode {mode} ({shown} do not); use cpu_mode host-model"
        raise Conflict(message, code="cpu_mode_unsupported", fields={"cpu_mode": [message]})


def tcg_cpu_note(arch: Arch, tcg_cpu: str | None = None) -> str:
    """What CPU a guest that will run under TCG gets instead of either mode, and why."""
    return "cpu_mode does not apply: " + tcg_model_reason(tcg_cpu or default_tcg_cpu(arch).name, bool(tcg_cpu))


def check_tcg_cpu(name: str | None, arch: Arch, settings: Settings) -> None:
    """A VM's own TCG CPU must exist for its arch and be one the admin allows (ARCHQ_TCG_CPUS_ALLOWED): it
    changes what the guest sees and how fast it runs, so users do not pick from QEMU's whole list."""
    if name is None:
        return
    try:
        find_tcg_cpu(name, arch)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="tcg_cpu_unknown", fields={"tcg_cpu": [str(exc)]}) from exc
    if name not in settings.tcg_cpus_allowed:
        allowed = ", ".join(settings.tcg_cpus_allowed) or "none"
        message = f"tcg_cpu {name!r} is not allowed here (ARCHQ_TCG_CPUS_ALLOWED: {allowed}); ask an admin"
        raise Unprocessable(message, code="tcg_cpu_not_allowed", fields={"tcg_cpu": [message]})
