"""GET /metrics: Prometheus text computed at scrape time from the database and Redis, behind a viewer
token."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import create_vm, wait_host, wait_job
from tests.support.auth import authed_client, make_token
from tests.support.services import wait_for


def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def test_metrics_need_a_token_and_a_viewer_is_enough(app, anonymous_client):
    assert anonymous_client.get("/metrics").status_code == 401
    viewer = authed_client(app, make_token(app, "viewer"))
    assert ("archq_running_vms_emulated_ratio", frozenset()) in scrape(viewer)


def test_jobs_durations_workers_and_emulated_share(client, conductor, hypervisor_worker):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        native = create_vm(client, name="sec-native")
        emulated = create_vm(client, name="sec-emulated", arch="arm64")
        for accepted in (native, emulated):
            assert wait_job(client, accepted["job"]["id"])["state"] == "succeeded"
        metrics = scrape(client)

    assert metrics[("archq_jobs", frozenset({("kind", "create"), ("state", "succeeded")}))] == 2
    count = "archq_job_duration_seconds_count"
    assert metrics[(count, frozenset({("kind", "create"), ("accel", "tcg")}))] == 2
    inf_bucket = frozenset({("kind", "create"), ("accel", "tcg"), ("le", "+Inf")})
    assert metrics[("archq_job_duration_seconds_bucket", inf_bucket)] == 2
    assert metrics[("archq_live_workers", frozenset({("arch", "amd64"), ("mode", "native")}))] == 1
    assert metrics[("archq_live_workers", frozenset({("arch", "arm64"), ("mode", "emulating")}))] == 1
    assert metrics[("archq_live_workers", frozenset({("arch", "arm64"), ("mode", "native")}))] == 0
    assert metrics[("archq_running_vms", frozenset({("arch", "arm64"), ("emulated", "true")}))] == 1
    assert metrics[("archq_running_vms_emulated_ratio", frozenset())] == 0.5


def test_queue_depth_counts_what_waits_in_redis(client):
    create_vm(client, name="sec-waiting", emulation="native_only")
    create_vm(client, name="sec-waiting-2", emulation="native_only")

    def depth() -> float:
        return scrape(client).get(("archq_queue_depth", frozenset({("queue", "amd64")})), 0)

    wait_for(lambda: depth() == 2, timeout=10, what="two messages on amd64")
    assert scrape(client)[("archq_queue_depth", frozenset({("queue", "control")}))] == 0
