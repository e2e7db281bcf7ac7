"""The image catalog over HTTP: register, list, get and delete images; a create uses the artifact of its
architecture (422 naming the ones the image has); sources and SHA256s are validated; an image in use stays."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migrations import upgrade
from tests.support.api import TINY, error_of

SHA = "ab" * 32


@pytest.fixture
def settings(settings, tmp_path: Path):
    (tmp_path / "sources").mkdir()
    return dataclasses.replace(settings, image_dirs=(settings.images_dir, tmp_path / "sources"))


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    return tmp_path / "sources"


def disk(source: str, sha: str = SHA, fmt: str = "qcow2") -> dict:
    return {"format": fmt, "source": source, "sha256": sha}


def test_tiny_is_registered_for_both_architectures(client):
    image = client.get("/api/v1/images/tiny").get_json()["image"]
    assert image["native_arch"] == "both"
    for arch in ("amd64", "arm64"):
        artifact = image["artifacts"][arch]
        assert artifact["format"] == "kernel+initrd"
        assert len(artifact["kernel"]["sha256"]) == 64 and len(artifact["initrd"]["sha256"]) == 64
        assert artifact["kernel"]["source"].endswith(f"/tiny/{arch}/vmlinuz")
    assert "console=ttyAMA0" in image["artifacts"]["arm64"]["cmdline"]


def test_register_list_get_and_delete(client):
    body = {"name": "debian-12", "artifacts": {"arm64": disk("https://images.example/debian-12-arm64.qcow2")}}
    response = client.post("/api/v1/images", json=body)
    assert response.status_code == 201
    assert response.headers["Location"] == "/api/v1/images/debian-12"
    image = response.get_json()["image"]
    assert (image["name"], image["native_arch"], image["vms"]) == ("debian-12", "arm64", 0)
    assert image["artifacts"]["arm64"] == disk("https://images.example/debian-12-arm64.qcow2")
    assert [i["name"] for i in client.get("/api/v1/images").get_json()["images"]] == ["debian-12", "tiny"]
    assert client.get("/api/v1/images/debian-12").get_json()["image"]["artifacts"] == image["artifacts"]
    assert client.delete("/api/v1/images/debian-12").status_code == 204
    assert error_of(client.get("/api/v1/images/debian-12"), 404)["code"] == "not_found"
    assert error_of(client.delete("/api/v1/images/debian-12"), 404)["code"] == "not_found"


def test_a_local_source_is_resolved_and_the_sha256_lowercased(client, sources):
    (sources / "img").mkdir()
    body = {"name": "local", "artifacts": {"amd64": disk(f"{sources}/img/../disk.raw", sha=SHA.upper(), fmt="raw")}}
    error = error_of(client.post("/api/v1/images", json=body), 422)
    assert "'..'" in error["fields"]["artifacts"]["amd64"]["source"][0]
    body["artifacts"]["amd64"]["source"] = f"{sources}//disk.raw"
    image = client.post("/api/v1/images", json=body).get_json()["image"]
    assert image["artifacts"]["amd64"] == {"format": "raw", "source": f"{sources}/disk.raw", "sha256": SHA}


def test_a_second_image_with_the_same_name_is_409(client):
    body = {"name": "twice", "artifacts": {"amd64": disk("http://mirror.example/a.qcow2")}}
    assert client.post("/api/v1/images", json=body).status_code == 201
    assert error_of(client.post("/api/v1/images", json=body), 409)["code"] == "name_taken"


@pytest.mark.parametrize(
    ("artifact", "path", "fragment"),
    [
        (disk("ftp://mirror.example/a.qcow2"), ["source"], "only http and https URLs are accepted, not ftp"),
        (disk("file://otherhost/a.qcow2"), ["source"], "only http and https URLs are accepted, not file"),
        (disk("relative/a.qcow2"), ["source"], "must be absolute"),
        (disk("/etc/shadow"), ["source"], "must be under one of the image directories"),
        (disk("http://mirror.example/a.qcow2", sha="abc"), ["sha256"], "64 hex digits"),
        (disk("http://mirror.example/a.qcow2", sha="g" * 64), ["sha256"], "64 hex digits"),
        (disk("http://mirror.example/a.vmdk", fmt="vmdk"), ["format"], "Must be one of"),
        ({"format": "qcow2", "source": "http://mirror.example/a.qcow2"}, ["sha256"], "required for format qcow2"),
        ({"format": "kernel+initrd", "kernel": {"source": "http://m/k", "sha256": SHA}}, ["initrd"], "required"),
        (
            {"format": "kernel+initrd", "source": "http://m.example/d", "sha256": SHA,
             "kernel": {"source": "http://m.example/k", "sha256": SHA},
             "initrd": {"source": "http://m.example/i", "sha256": SHA}},
            ["source"],
            "not used by format kernel+initrd",
        ),
        (
            {"format": "kernel+initrd", "kernel": {"source": "/etc/passwd", "sha256": SHA},
             "initrd": {"source": "http://m.example/i", "sha256": SHA}},
            ["kernel", "source"],
            "must be under one of the image directories",
        ),
        ({**disk("http://m.example/a.qcow2"), "cmdline": "console=ttyS0"}, ["cmdline"], "only used with kernel"),
        ({**disk("http://m.example/a.qcow2"), "login_user": "Root User"}, ["login_user"], "lower-case user name"),
    ],
)  # fmt: skip
def test_invalid_artifact_is_422_naming_the_field(client, artifact, path, fragment):
    error = error_of(client.post("/api/v1/images", json={"name": "bad", "artifacts": {"amd64": artifact}}), 422)
    assert error["code"] == "validation_failed"
    where = error["fields"]["artifacts"]["amd64"]
    for key in path:
        where = where[key]
    assert fragment in " ".join(where)


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"name": "Bad Name", "artifacts": {"amd64": disk("http://m.example/a")}}, "name", "must be 1-63"),
        ({"name": "empty", "artifacts": {}}, "artifacts", "give an artifact"),
        ({"name": "noarts"}, "artifacts", "required"),
        ({"name": "sparc", "artifacts": {"sparc64": disk("http://m.example/a")}}, "artifacts", "Unknown field"),
    ],
)
def test_invalid_image_is_422(client, body, field, fragment):
    error = error_of(client.post("/api/v1/images", json=body), 422)
    assert fragment in str(error["fields"][field])


def booted_disk(**parts) -> dict:
    """A disk that carries the kernel, initrd and command line it boots directly (the debian-12 form)."""
    body = {
        **disk("https://m.example/debian-12.qcow2"),
        "kernel": {"source": "https://m.example/vmlinuz", "sha256": SHA},
        "initrd": {"source": "https://m.example/initrd.img", "sha256": SHA},
        "cmdline": "root=/dev/vda rw console=ttyS0",
        "login_user": "debian",
    }
    return {k: v for k, v in {**body, **parts}.items() if v is not None}


def test_a_disk_with_its_own_kernel_initrd_and_cmdline_is_registered_as_given(client):
    response = client.post("/api/v1/images", json={"name": "debian-12", "artifacts": {"amd64": booted_disk()}})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["image"]["artifacts"]["amd64"] == booted_disk()


def test_a_disk_with_a_kernel_and_no_cmdline_gets_an_empty_one(client):
    response = client.post("/api/v1/images", json={"name": "d", "artifacts": {"amd64": booted_disk(cmdline=None)}})
    assert response.get_json()["image"]["artifacts"]["amd64"]["cmdline"] == ""


@pytest.mark.parametrize(
    ("given", "field", "fragment"),
    [
        ({"initrd": None}, "initrd", "required with kernel"),
        ({"kernel": None}, "kernel", "required with initrd"),
        ({"kernel": None, "initrd": None}, "cmdline", "only used with kernel and initrd"),
    ],
)
def test_half_of_a_booted_disk_is_422_naming_the_missing_field(client, given, field, fragment):
    body = {"name": "half", "artifacts": {"arm64": booted_disk(**given)}}
    error = error_of(client.post("/api/v1/images", json=body), 422)
    assert fragment in " ".join(error["fields"]["artifacts"]["arm64"][field])


def test_a_create_for_an_arch_the_image_lacks_is_422_naming_what_it_has(client):
    client.post("/api/v1/images", json={"name": "x86-only", "artifacts": {"amd64": disk("http://m.example/a")}})
    error = error_of(client.post("/api/v1/vms", json={**TINY, "image": "x86-only", "arch": "aarch64"}), 422)
    assert error["code"] == "image_arch_unavailable"
    assert error["fields"]["image"] == ["image 'x86-only' has no arm64 artifact; it has: amd64"]


def test_a_create_of_an_unknown_image_names_the_known_ones(client):
    error = error_of(client.post("/api/v1/vms", json={**TINY, "image": "windows"}), 422)
    assert error["fields"]["image"] == ["unknown image 'windows'; known: tiny"]


def test_the_create_job_carries_the_artifact_of_its_arch(client, app):
    from web.extensions import db
    from web.models import Job

    artifact = disk("https://m.example/arm.qcow2")
    client.post("/api/v1/images", json={"name": "both", "artifacts": {"amd64": disk("https://m.example/x86.raw",
                                        fmt="raw"), "arm64": artifact}})  # fmt: skip
    job_id = client.post("/api/v1/vms", json={**TINY, "image": "both", "arch": "arm64"}).get_json()["job"]["id"]
    with app.app_context():
        sent = db.session.get(Job, job_id).payload["vm"]["artifact"]
    assert {k: v for k, v in sent.items() if v} == artifact


def test_an_image_used_by_a_vm_cannot_be_deleted_until_the_vm_is(client):
    client.post("/api/v1/images", json={"name": "used", "artifacts": {"amd64": disk("http://m.example/a")}})
    vm = client.post("/api/v1/vms", json={**TINY, "image": "used"}).get_json()["vm"]
    error = error_of(client.delete("/api/v1/images/used"), 409)
    assert error["code"] == "image_in_use" and error["fields"]["vms"] == [vm["id"]]
    assert client.get("/api/v1/images/used").get_json()["image"]["vms"] == 1


def test_a_retried_registration_with_its_idempotency_key_answers_the_original(client):
    body = {"name": "retried", "artifacts": {"amd64": disk("http://m.example/a")}}
    first = client.post("/api/v1/images", json=body, headers={"Idempotency-Key": "img-1"})
    again = client.post("/api/v1/images", json=body, headers={"Idempotency-Key": "img-1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()


def run_cli(settings, *args: str, **env: str) -> subprocess.CompletedProcess:
    from tests.conftest import settings_env

    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args], env={**os.environ, **settings_env(settings), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow  # two `archq` child processes
def test_archq_images_register_tiny_reads_the_built_manifests(settings, tmp_path):
    upgrade(settings.database_url)
    done = run_cli(settings, "images", "register-tiny")
    assert done.returncode == 0, done.stderr
    assert "image tiny registered for amd64, arm64" in done.stdout
    missing = run_cli(settings, "images", "register-tiny", ARCHQ_IMAGES_DIR=str(tmp_path / "empty"))
    assert missing.returncode != 0 and "run `archq images build tiny`" in missing.stderr
