"""A host's content-addressed store: an artifact is fetched once (downloaded over HTTP or copied from a local
path), verified against its SHA256 before anything uses it, stored read-only under its hash, and never seen
half-written; a mismatch or an oversized source leaves nothing behind."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from queues.arch import Arch
from workers.artifacts import ArtifactError, ArtifactStore, create_overlay, create_state_disk
from workers.boot import Boot, prepare_disk

PAYLOAD = b"archq artifact\n" * 4096


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Files(http.server.SimpleHTTPRequestHandler):
    hits: list[str]

    def log_message(self, *_args) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        super().do_GET()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback serving tmp_path/www; yields its base URL and the paths requested."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "disk.img").write_bytes(PAYLOAD)
    hits: list[str] = []
    handler = type("Handler", (_Files,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(root), **kw))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    (tmp_path / "sources").mkdir()
    return ArtifactStore(tmp_path / "images", [tmp_path / "sources"], max_bytes=1 << 20)


def test_a_download_is_stored_read_only_under_its_hash(store, served):
    base, _hits = served
    path = store.ensure(f"{base}/disk.img", sha(PAYLOAD))
    assert path == store.root / "sha256" / sha(PAYLOAD)
    assert path.read_bytes() == PAYLOAD
    assert path.stat().st_mode & 0o777 == 0o444


def test_concurrent_creates_fetch_an_artifact_once(store, served):
    base, hits = served
    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(lambda _i: store.ensure(f"{base}/disk.img", sha(PAYLOAD)), range(8)))
    assert paths == {store.path_of(sha(PAYLOAD))}
    assert hits == ["/disk.img"]
    assert list((store.root / ".tmp").iterdir()) == []


def test_a_local_source_is_copied_once_and_uppercase_hashes_are_the_same(store, tmp_path):
    source = tmp_path / "sources" / "kernel"
    source.write_bytes(PAYLOAD)
    first = store.ensure(str(source), sha(PAYLOAD).upper())
    source.unlink()
    assert store.ensure(str(source), sha(PAYLOAD)) == first


def test_a_checksum_mismatch_fails_and_leaves_nothing(store, served):
    base, _hits = served
    wrong = "0" * 64
    with pytest.raises(ArtifactError) as raised:
        store.ensure(f"{base}/disk.img", wrong)
    assert raised.value.code == "image_checksum_mismatch"
    assert sha(PAYLOAD) in str(raised.value) and wrong in str(raised.value)
    assert not store.path_of(wrong).exists() and not store.path_of(sha(PAYLOAD)).exists()
    assert list((store.root / ".tmp").iterdir()) == []


def test_a_corrupted_store_file_is_fetched_again(store, tmp_path):
    source = tmp_path / "sources" / "disk"
    source.write_bytes(PAYLOAD)
    other = ArtifactStore(store.root.parent, store.allowed_dirs, store.max_bytes)
    path = other.path_of(sha(PAYLOAD))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"bit rot")
    assert other.ensure(str(source), sha(PAYLOAD)).read_bytes() == PAYLOAD


def test_an_oversized_source_is_refused(tmp_path, served):
    base, _hits = served
    small = ArtifactStore(tmp_path / "images", [], max_bytes=1000)
    with pytest.raises(ArtifactError) as raised:
        small.ensure(f"{base}/disk.img", sha(PAYLOAD))
    assert raised.value.code == "image_too_large" and "ARCHQ_MAX_IMAGE_BYTES" in str(raised.value)
    assert list((small.root / ".tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("source", "code"),
    [("/etc/hostname", "image_source_refused"), ("ftp://mirror.example/a", "image_source_refused")],
)
def test_the_worker_checks_sources_itself(store, source, code):
    with pytest.raises(ArtifactError) as raised:
        store.ensure(source, "1" * 64)
    assert raised.value.code == code


def test_missing_sources_fail_with_a_message(store, tmp_path, served):
    base, _hits = served
    with pytest.raises(ArtifactError) as raised:
        store.ensure(str(tmp_path / "sources" / "absent"), "1" * 64)
    assert raised.value.code == "image_unavailable"
    with pytest.raises(ArtifactError) as raised:
        store.ensure(f"{base}/absent", "1" * 64)
    assert raised.value.code == "image_download_failed" and "404" in str(raised.value)


def qemu_img_info(path: Path) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output", "json", str(path)], check=True,
                                     capture_output=True, text=True).stdout)  # fmt: skip


def test_an_overlay_is_backed_by_the_base_and_made_once(tmp_path):
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0" * (1 << 20))
    base.chmod(0o444)
    overlay = tmp_path / "vm" / "disk.qcow2"
    overlay.parent.mkdir()
    create_overlay(overlay, base, "raw")
    info = qemu_img_info(overlay)
    assert (info["format"], info["backing-filename"], info["backing-filename-format"]) == ("qcow2", str(base), "raw")
    assert info["virtual-size"] == 1 << 20
    before = overlay.stat().st_ino
    create_overlay(overlay, base, "raw")
    assert overlay.stat().st_ino == before
    assert [p.name for p in overlay.parent.iterdir()] == ["disk.qcow2"]


def test_an_overlay_is_as_large_as_asked_when_that_is_larger_than_the_base_and_never_smaller(tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "2G"], check=True)
    for name, size_gib, expected in (("grown", 8, 8 << 30), ("kept", 1, 2 << 30), ("default", None, 2 << 30)):
        overlay = tmp_path / name / "disk.qcow2"
        overlay.parent.mkdir()
        create_overlay(overlay, base, "qcow2", size_gib)
        info = qemu_img_info(overlay)
        assert (info["virtual-size"], info["backing-filename"]) == (expected, str(base)), name


def test_a_disk_carrying_a_kernel_boots_it_with_the_overlay_as_root_and_no_nvram(store, tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "2G"], check=True)
    files = {"disk": base, "kernel": tmp_path / "vmlinuz", "initrd": tmp_path / "initrd.img"}
    ref = {"source": str(tmp_path / "src"), "sha256": "ab" * 32}
    artifact = {"format": "qcow2", "kernel": ref, "initrd": ref, "cmdline": "root=/dev/vda rw console=ttyAMA0"}
    (tmp_path / "vm").mkdir()
    boot = prepare_disk(store, artifact, files, tmp_path / "vm", Arch.ARM64, size_gib=8)
    assert boot == Boot(files["kernel"], files["initrd"], artifact["cmdline"], tmp_path / "vm" / "disk.qcow2",
                        "qcow2", None)  # fmt: skip
    assert qemu_img_info(boot.disk)["virtual-size"] == 8 << 30
    (tmp_path / "plain").mkdir()
    plain = prepare_disk(store, {"format": "qcow2"}, {"disk": base}, tmp_path / "plain", Arch.ARM64)
    assert (plain.kernel, plain.nvram) == (None, tmp_path / "plain" / "nvram.fd")


def test_a_state_disk_is_a_blank_64_mib_qcow2(store, tmp_path):
    disk = tmp_path / "disk.qcow2"
    create_state_disk(store, disk)
    info = qemu_img_info(disk)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 64 << 20) and "backing-filename" not in info


def test_a_partial_file_left_by_a_killed_fetcher_is_removed(store, tmp_path):
    source = tmp_path / "sources" / "disk"
    source.write_bytes(PAYLOAD)
    (store.root / ".tmp").mkdir(parents=True)
    leftover = store.root / ".tmp" / f"{sha(PAYLOAD)}.dead.part"
    leftover.write_bytes(PAYLOAD[:10])
    store.ensure(str(source), sha(PAYLOAD))
    assert list((store.root / ".tmp").iterdir()) == []
