"""Every list of the API behaves the same: filters on its main fields, a 422 for a parameter it does not know,
keyset pages followed through `next` (in the body and the Link header), and old finished jobs pruned."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import update

from queues.vocabulary import JobKind, JobState
from tests.api.test_hosts_page import register
from tests.support.api import create_vm, error_of
from web.conductor.service import build_conductor
from web.extensions import db
from web.models import Job, JobEvent, Snapshot, utcnow
from web.paging import encode_cursor

LISTS = ("/api/v1/vms", "/api/v1/jobs", "/api/v1/hosts", "/api/v1/images")


def follow(client, path: str, **query) -> list[list[dict]]:
    """Every page of a list, by its Link headers, checking each names the body's `next` and keeps the filters."""
    collection = path.rsplit("/", 1)[-1]
    pages = []
    response = client.get(path, query_string=query)
    while True:
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body[collection])
        if body["next"] is None:
            assert "Link" not in response.headers
            return pages
        link = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers["Link"])
        assert link, response.headers["Link"]
        url = urlsplit(link[1])
        assert url.path == path
        assert dict(parse_qsl(url.query)) == {**{k: str(v) for k, v in query.items()}, "next": body["next"]}
        response = client.get(link[1])


@pytest.mark.parametrize("path", [*LISTS, "/api/v1/vms/{vm}/snapshots"])
def test_an_unknown_query_parameter_is_refused_by_every_list(client, path):
    vm = create_vm(client)["vm"]["id"]
    error = error_of(client.get(path.format(vm=vm), query_string={"colour": "blue"}), 422)
    assert error["code"] == "validation_failed" and "colour" in error["fields"]


@pytest.mark.parametrize("path", LISTS)
def test_a_repeated_parameter_and_a_bad_limit_are_refused(client, path):
    assert "limit" in error_of(client.get(f"{path}?limit=1&limit=2"), 422)["fields"]
    assert "limit" in error_of(client.get(f"{path}?limit=0"), 422)["fields"]


def test_vms_filter_by_arch_state_name_and_host(client):
    create_vm(client, name="amd")
    arm = create_vm(client, name="arm", arch="arm64")["vm"]

    def names(**query) -> list[str]:
        response = client.get("/api/v1/vms", query_string=query)
        assert response.status_code == 200, response.get_json()
        return [vm["name"] for vm in response.get_json()["vms"]]

    assert names(arch="arm64") == ["arm"]
    assert names(arch="aarch64") == ["arm"]
    assert names(arch="amd64") == ["amd"]
    assert names(name="arm") == ["arm"] and names(name="nobody") == []
    assert names(state="pending") == ["amd", "arm"] and names(state="running") == []
    assert names(host="elsewhere") == []
    assert "state" in error_of(client.get("/api/v1/vms?state=deleted"), 422)["fields"]
    assert "arch" in error_of(client.get("/api/v1/vms?arch=sparc"), 422)["fields"]
    assert arm["arch"] == "arm64"


def test_vms_page_through_every_vm_once_oldest_first(client):
    created = [create_vm(client, name=f"vm-{n}")["vm"]["name"] for n in range(7)]
    pages = follow(client, "/api/v1/vms", limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [vm["name"] for page in pages for vm in page] == created


def test_jobs_filter_and_page_newest_first(client):
    vms = [create_vm(client, name=f"vm-{n}") for n in range(5)]
    pages = follow(client, "/api/v1/jobs", kind="create", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [job["id"] for page in pages for job in page] == [vm["job"]["id"] for vm in reversed(vms)]
    one = vms[2]["vm"]["id"]
    assert [job["vm_id"] for job in client.get(f"/api/v1/jobs?vm_id={one}").get_json()["jobs"]] == [one]
    assert client.get("/api/v1/jobs?state=succeeded").get_json()["jobs"] == []
    assert client.get("/api/v1/jobs?host=nowhere").get_json()["jobs"] == []
    assert "vm_id" in error_of(client.get("/api/v1/jobs?vm_id=not-a-uuid"), 422)["fields"]
    assert "kind" in error_of(client.get("/api/v1/jobs?kind=dance"), 422)["fields"]


def test_hosts_filter_by_state_and_arch(client, app, settings):
    register(app, ["a", "b", "c"])
    client.post("/api/v1/hosts/b/drain")
    with app.app_context():
        from web.models import Host

        db.session.get(Host, "c").last_seen = utcnow() - timedelta(hours=1)
        db.session.commit()

    def names(**query) -> list[str]:
        return [host["name"] for host in client.get("/api/v1/hosts", query_string=query).get_json()["hosts"]]

    assert (names(state="up"), names(state="drained"), names(state="down")) == (["a"], ["b"], ["c"])
    assert names(arch="amd64") == ["a", "b", "c"] and names(arch="arm64") == []


def test_images_page_by_name(client):
    # The test database has `tiny`; two more make three pages of one.
    for name in ("alpha", "zulu"):
        body = {"name": name, "artifacts": {"amd64": {"format": "raw", "source": "https://example.org/x.img",
                                                       "sha256": "0" * 64}}}  # fmt: skip
        assert client.post("/api/v1/images", json=body).status_code == 201
    pages = follow(client, "/api/v1/images", limit=1)
    assert [[image["name"] for image in page] for page in pages] == [["alpha"], ["tiny"], ["zulu"]]
    assert [i["name"] for i in client.get("/api/v1/images?name=zulu").get_json()["images"]] == ["zulu"]


def test_snapshots_filter_and_page(client, app):
    vm = create_vm(client)["vm"]["id"]
    with app.app_context():
        now = utcnow()
        for n in range(5):
            state = "ready" if n % 2 == 0 else "failed"
            db.session.add(Snapshot(vm_id=vm, name=f"s{n}", memory=False, state=state, job_id=f"job-{n}",
                                    created_at=now + timedelta(seconds=n)))  # fmt: skip
        db.session.commit()
    path = f"/api/v1/vms/{vm}/snapshots"
    pages = follow(client, path, limit=2)
    assert [[s["name"] for s in page] for page in pages] == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert [[s["name"] for s in page] for page in follow(client, path, state="ready", limit=2)] == [
        ["s0", "s2"],
        ["s4"],
    ]
    assert client.get(f"{path}?memory=true").get_json()["snapshots"] == []


def test_a_cursor_of_another_list_is_refused(client):
    create_vm(client)
    for cursor in (encode_cursor(["a"]), encode_cursor(["not-a-time", "x"])):
        assert "next" in error_of(client.get("/api/v1/vms", query_string={"next": cursor}), 422)["fields"]


def _age(app, job_ids: list[str], days: float) -> None:
    # One statement that bumps the version: the API's publisher, which may be queueing these jobs now, then
    # fails its stale write instead of undoing this one.
    with app.app_context():
        db.session.execute(
            update(Job)
            .where(Job.id.in_(job_ids))
            .values(state=JobState.CANCELLED, finished_at=utcnow() - timedelta(days=days), version=Job.version + 1)
        )
        db.session.commit()


def test_the_conductor_prunes_old_finished_jobs_but_a_vms_newest(client, app):
    first = create_vm(client, name="one")
    with app.app_context():
        create = db.session.get(Job, first["job"]["id"])
        later = Job(id=str(uuid.uuid4()), kind=JobKind.STOP, state=JobState.PENDING, queue=create.queue,
                    vm_id=create.vm_id, task=JobKind.STOP.task, payload={}, token="t",
                    created_at=create.created_at + timedelta(seconds=1))  # fmt: skip
        db.session.add(later)
        db.session.commit()
        later_id = later.id
    other = create_vm(client, name="two")
    recent = create_vm(client, name="three")
    _age(app, [first["job"]["id"], later_id, other["job"]["id"]], days=31)
    _age(app, [recent["job"]["id"]], days=29)

    build_conductor(app).sweep()

    # vm one's create went (its stop is newer); vm two's create stays (its newest); three's is too recent.
    assert client.get(f"/api/v1/jobs/{first['job']['id']}").status_code == 404
    kept = {job["id"] for page in follow(client, "/api/v1/jobs") for job in page}
    assert kept == {later_id, other["job"]["id"], recent["job"]["id"]}
    with app.app_context():
        assert db.session.query(JobEvent).filter(JobEvent.job_id == first["job"]["id"]).count() == 0


def test_a_retention_of_zero_keeps_every_job(client, app):
    job = create_vm(client)["job"]["id"]
    _age(app, [job], days=3650)
    app.extensions["archq"].settings = dataclasses.replace(app.extensions["archq"].settings, job_retention_days=0)
    build_conductor(app).sweep()
    assert client.get(f"/api/v1/jobs/{job}").status_code == 200
