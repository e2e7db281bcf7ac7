"""A TCG guest holds its RAM and its translation cache: the heartbeat's recount of a host and the placement
reservation both count it, so an emulating host is not overcommitted."""

from __future__ import annotations

from queues.emulation import TB_CACHE_MIB, footprint_mib
from tests.support.fleet import add_vm, beat
from web.extensions import db
from web.models import Host
from web.services import capacity


def test_a_tcg_guest_holds_ram_and_translation_cache(app):
    with app.app_context():
        beat("x", accel="kvm", memory_mib=4096)
        add_vm(host="x", arch="arm64", accel="tcg", emulated=True)  # 128 MiB under TCG
        add_vm(host="x", accel="kvm")  # 128 MiB accelerated
        beat("x", accel="kvm", memory_mib=4096)
        assert db.session.get(Host, "x").free_memory_mib == 4096 - 128 - 128 - TB_CACHE_MIB
        assert capacity.used_by("x") == (2, 256 + TB_CACHE_MIB)


def test_reservation_takes_the_footprint(app):
    with app.app_context():
        beat("x", accel="kvm", memory_mib=1024)
        free = db.session.get(Host, "x").free_memory_mib
        assert capacity.reserve("x", 1, footprint_mib(512, tcg=True), 0)
        db.session.commit()
        assert db.session.get(Host, "x").free_memory_mib == free - 512 - TB_CACHE_MIB
        # A TCG guest whose RAM alone would take exactly what is left does not fit.
        left = free - 512 - TB_CACHE_MIB
        assert not capacity.reserve("x", 1, footprint_mib(left, tcg=True), 0)
        assert capacity.reserve("x", 1, footprint_mib(left, tcg=False), 0)
