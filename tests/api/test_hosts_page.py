"""GET /api/v1/hosts answers a page at a time in name order (keyset): following `next` lists every host once,
and a page costs the same however many hosts come before it."""

from __future__ import annotations

import time

from queues import messages
from web.extensions import db
from web.paging import encode_cursor
from web.services.hosts import record_heartbeat


def beat(name: str) -> dict:
    return messages.heartbeat.load({
        "host": name, "arch": "amd64", "accel": "kvm", "emulators": [], "queues": ["amd64"], "cpu_modes": {},
        "capacity": {"vcpus": 8, "memory_mib": 8192}, "allocated": {}, "domains": [],
        "started_at": time.time(), "at": time.time(),
    })  # fmt: skip


def register(app, names: list[str]) -> None:
    with app.app_context():
        for name in names:
            record_heartbeat(beat(name))
        db.session.commit()


def test_following_next_lists_every_host_once_in_name_order(client, app):
    names = [f"host-{n:02d}" for n in range(25)]
    register(app, list(reversed(names)))

    pages, cursor = [], None
    while True:
        answer = client.get("/api/v1/hosts", query_string={"limit": 10, **({"next": cursor} if cursor else {})})
        assert answer.status_code == 200
        body = answer.get_json()
        pages.append([host["name"] for host in body["hosts"]])
        cursor = body["next"]
        if cursor is None:
            break

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [name for page in pages for name in page] == names


def test_a_page_that_ends_the_list_exactly_has_no_next(client, app):
    register(app, ["a", "b"])
    body = client.get("/api/v1/hosts?limit=2").get_json()
    assert ([h["name"] for h in body["hosts"]], body["next"]) == (["a", "b"], None)


def test_a_cursor_the_api_did_not_answer_is_refused(client, app):
    register(app, ["a"])
    nul = encode_cursor(["a\x00"])
    two = encode_cursor(["a", "b"])
    # Garbage, {"x": 1}, null, a NUL in the name, a cursor of another list (two keys).
    for cursor in ("not-base64!", "eyJ4IjogMX0=", "bnVsbA==", nul, two):
        response = client.get("/api/v1/hosts", query_string={"next": cursor})
        assert response.status_code == 422, cursor
        assert "next" in response.get_json()["error"]["fields"]
