"""Image sources: only http(s) URLs or files under the configured directories, a SHA-256 always, a bounded
size."""

from __future__ import annotations

from pathlib import Path

import pytest

from queues.config import Settings
from queues.image_sources import validate_sha256, validate_size, validate_source


@pytest.fixture
def images(tmp_path: Path) -> Path:
    directory = tmp_path / "images"
    directory.mkdir()
    (directory / "debian.qcow2").write_bytes(b"qcow")
    return directory


@pytest.mark.parametrize(
    "url", ["https://cloud.debian.org/images/debian-12.qcow2", "http://mirror.example:8080/a.img?x=1"]
)
def test_http_and_https_urls_are_accepted(url, images):
    assert validate_source(url, [images]) == url


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("file:///etc/shadow", "only http and https"),
        ("ftp://example.org/a.img", "only http and https"),
        ("gopher://example.org/a", "only http and https"),
        ("https:///no-host", "no host"),
        ("https://user:secret@example.org/a.img", "credentials"),
        ("https://example.org:99999/a.img", "port"),
        ("", "http(s) URL or a local path"),
        ("https://example.org/a\nb", "printable"),
        ("https://example.org/" + "a" * 3000, "at most"),
    ],
)
def test_other_urls_are_refused(source, fragment, images):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        validate_source(source, [images])


def test_a_file_under_an_image_directory_is_accepted(images):
    assert validate_source(str(images / "debian.qcow2"), [images]) == str((images / "debian.qcow2").resolve())


@pytest.mark.parametrize("relative", ["../secret.img", "sub/../../secret.img"])
def test_dot_dot_escapes_are_refused(images, relative):
    with pytest.raises(ValueError, match=r"'\.\.'"):
        validate_source(f"{images}/{relative}", [images])


def test_a_symlink_out_of_the_image_directories_is_refused(images, tmp_path):
    (tmp_path / "outside.img").write_bytes(b"x")
    (images / "link.img").symlink_to(tmp_path / "outside.img")
    with pytest.raises(ValueError, match="under one of the image directories"):
        validate_source(str(images / "link.img"), [images])


@pytest.mark.parametrize("path", ["/etc/passwd", "relative/a.img"])
def test_paths_elsewhere_are_refused(images, path):
    with pytest.raises(ValueError):
        validate_source(path, [images])


def test_a_sibling_directory_with_the_same_prefix_is_not_inside(tmp_path, images):
    sibling = tmp_path / "images-evil"
    sibling.mkdir()
    with pytest.raises(ValueError):
        validate_source(str(sibling / "a.img"), [images])


def test_sha256_is_required_and_normalised():
    digest = "AB" * 32
    assert validate_sha256(digest) == "ab" * 32
    for bad in ("", "ab" * 31, "zz" * 32, None):
        with pytest.raises(ValueError, match="SHA-256"):
            validate_sha256(bad)


def test_size_is_bounded():
    assert validate_size(10, 10) == 10
    for bad in (11, -1, True, "5"):
        with pytest.raises(ValueError):
            validate_size(bad, 10)


def test_image_dirs_and_size_limit_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHQ_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ARCHQ_IMAGES_DIR", raising=False)
    monkeypatch.delenv("ARCHQ_IMAGE_DIRS", raising=False)
    assert Settings.from_env().image_dirs == (tmp_path / "images",)
    monkeypatch.setenv("ARCHQ_IMAGE_DIRS", "/srv/images:/mnt/golden")
    monkeypatch.setenv("ARCHQ_MAX_IMAGE_BYTES", "1024")
    settings = Settings.from_env()
    assert settings.image_dirs == (Path("/srv/images"), Path("/mnt/golden"))
    assert settings.max_image_bytes == 1024
