"""An image source is an http(s) URL or a local path inside an allowed directory; nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from queues.image_sources import validate_source


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    return tmp_path / "images"


@pytest.mark.parametrize("url", ["http://mirror.example/a.qcow2", "https://mirror.example:8443/x/y.raw?sig=1"])
def test_http_and_https_urls_pass_unchanged(url, allowed):
    assert validate_source(url, [allowed]) == url


def test_a_local_path_is_resolved(allowed):
    assert validate_source(f"{allowed}//sub/./disk.qcow2", [allowed]) == f"{allowed}/sub/disk.qcow2"
    assert validate_source(f"file://{allowed}/disk.qcow2", [allowed]) == f"{allowed}/disk.qcow2"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("", "must be an http(s):// URL"),
        ("ftp://mirror.example/a", "not allowed"),
        ("gopher://mirror.example/a", "not allowed"),
        ("http:///no-host", "names no host"),
        ("file://remote/a", "local path"),
        ("disk.qcow2", "absolute"),
        ("/etc/passwd", "outside the allowed"),
        ("{allowed}/../escape", "'..'"),
        ("{allowed}/a\nb", "printable"),
    ],
)
def test_refused_sources_say_why(source, fragment, allowed):
    with pytest.raises(ValueError, match=None) as raised:
        validate_source(source.format(allowed=allowed), [allowed])
    assert fragment in str(raised.value)


def test_a_symlink_out_of_an_allowed_directory_is_refused(allowed, tmp_path):
    (tmp_path / "secret").write_text("x")
    (allowed / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(ValueError, match="outside the allowed"):
        validate_source(str(allowed / "link"), [allowed])


def test_a_sibling_with_a_common_prefix_is_not_inside(allowed, tmp_path):
    (tmp_path / "images-evil").mkdir()
    with pytest.raises(ValueError, match="outside the allowed"):
        validate_source(str(tmp_path / "images-evil" / "a"), [allowed])
