"""`archq vm attest verify` and `archq host trust-key` against a real API process, conductor and test-driver
worker: the chain verifies online and from an exported file, an edited export fails naming the record, and a
host's changed key is accepted only under its right fingerprint and by an admin."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from client.cli import main
from queues import attestation
from tests.support.api import wait_host
from tests.support.services import wait_for
from workers.attest import signing_key_path


@pytest.fixture
def archq(live_api, monkeypatch):
    """`archq ARGS...` in-process against the live API, with the operator token unless another is given."""
    monkeypatch.setenv("ARCHQ_URL", live_api.url)
    monkeypatch.setenv("ARCHQ_TOKEN", live_api.operator_token)

    def run(*args: str, token: str | None = None, expect: int = 0):
        extra = ["--token", token] if token is not None else []
        result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
        return result

    return run


def test_verify_online_export_and_offline(archq, client, conductor, hypervisor_worker, tmp_path):
    exported = tmp_path / "chain.json"
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
        archq("vm", "create", "attest-cli", "--arch", "x86_64", "--wait", "--timeout", "30")
        archq("vm", "stop", "attest-cli", "--wait", "--timeout", "30")
        online = archq("vm", "attest", "verify", "attest-cli", "--export", str(exported)).output
    assert "2 record(s) signed by amd64-host SHA256:" in online and online.strip().endswith("chain verified")

    offline = json.loads(archq("vm", "attest", "verify", "--file", str(exported), "-o", "json").output)
    assert (offline["records"], offline["verified"], offline["problems"]) == (2, True, [])

    chain = json.loads(exported.read_text())
    chain["records"][0]["payload"]["accel"] = "kvm"
    exported.write_text(json.dumps(chain))
    failed = archq("vm", "attest", "verify", "--file", str(exported), expect=1).output
    assert f"record 0 (job {chain['records'][0]['payload']['job_id']}): signature does not match" in failed
    assert "chain NOT verified" in failed
    archq("vm", "attest", "verify", expect=2)  # neither a VM nor --file: a usage error


def test_trust_key_needs_the_offered_fingerprint_and_an_admin(
    archq, live_api, client, conductor, hypervisor_worker, settings
):
    with hypervisor_worker("amd64-host"):
        wait_host(client, "amd64-host")
    archq("host", "trust-key", "amd64-host", "--yes", token=live_api.admin_token, expect=1)  # nothing offered
    signing_key_path(settings.data_dir, "amd64-host").unlink()
    with hypervisor_worker("amd64-host") as service:
        offered = attestation.fingerprint(attestation.public_key_text(service.runner.ctx.signing_key.public_key()))

        def flagged() -> bool:
            return client.get("/api/v1/hosts/amd64-host").get_json()["host"]["signing_key"]["offered"] == offered

        wait_for(flagged, timeout=15, what="the new key flagged")
        wrong = archq("host", "trust-key", "amd64-host", "--fingerprint", "SHA256:" + "A" * 43, "--yes",
                      token=live_api.admin_token, expect=1)  # fmt: skip
        assert "do not trust it" in wrong.output
        # An operator may not accept keys.
        archq("host", "trust-key", "amd64-host", "--fingerprint", offered, "--yes", expect=1)
        trusted = archq(
            "host", "trust-key", "amd64-host", "--fingerprint", offered, "--yes", token=live_api.admin_token
        )
        assert f"signing key {offered} trusted" in trusted.output
        host = client.get("/api/v1/hosts/amd64-host").get_json()["host"]
        assert host["signing_key"] == {"fingerprint": offered, "offered": None}
