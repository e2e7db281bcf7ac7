"""A host that was down for a moment and came back: its VMs, marked `unknown` meanwhile, are known again from
its heartbeats. Heartbeats reconcile only when they are full; the first one after the host's return came while
the marking was too fresh to touch (changed within two beats), and the later ones, unchanged, were liveness
marks: the VM stayed `unknown` for minutes (seen under load after a worker restart, its next snapshot refused)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from tests.support.fleet import add_vm, beat
from web.extensions import db
from web.models import Host, Vm, utcnow
from web.services.reconciler import mark_down_hosts_unknown, reconcile_host, reconcile_returned_hosts


def running_domain(vm_id: str) -> dict:
    return {"uuid": vm_id, "name": f"archq-{vm_id[:8]}", "state": "running", "reason": "booted"}


def age(model, seconds: float, **where) -> None:
    column = model.last_seen if model is Host else model.updated_at
    statement = update(model).values({column.key: utcnow() - timedelta(seconds=seconds)})
    db.session.execute(statement.filter_by(**where))
    db.session.commit()


def left_unknown_by_a_down_host(settings) -> str:
    """The id of a running VM on host `a`, marked `unknown` once `a` stopped beating."""
    beat("a")
    vm_id = add_vm(host="a")
    beat("a", domains=[running_domain(vm_id)])
    age(Host, settings.host_down_after_s + 1, name="a")
    assert mark_down_hosts_unknown(settings) == 1
    return vm_id


def test_a_vm_left_unknown_while_its_host_was_down_is_known_again_once_the_host_is_back(app, settings):
    with app.app_context():
        vm_id = left_unknown_by_a_down_host(settings)

        # The host is back with the same domain: its first full beat is reconciled at once, too soon after the
        # marking to touch the VM, and nothing about the host changes after it.
        beat("a", domains=[running_domain(vm_id)])
        reconcile_host(db.session.get(Host, "a"), settings)
        assert db.session.get(Vm, vm_id).state == "unknown"

        # Two beats later the sweep reconciles the host against that beat.
        age(Vm, 2 * settings.heartbeat_interval_s + 1, id=vm_id)
        assert reconcile_returned_hosts(settings) == (1, [])
        assert db.session.get(Vm, vm_id).state == "running"
        assert reconcile_returned_hosts(settings) == (0, [])


def test_a_vm_whose_host_is_still_down_stays_unknown(app, settings):
    with app.app_context():
        vm_id = left_unknown_by_a_down_host(settings)
        age(Vm, 2 * settings.heartbeat_interval_s + 1, id=vm_id)
        assert reconcile_returned_hosts(settings) == (0, [])
        assert db.session.get(Vm, vm_id).state == "unknown"
