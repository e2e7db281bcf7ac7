"""The NoCloud seed the worker writes for a guest, and the host keys it reads back from the guest's serial console.

Seed files are a pure function of the job (a redelivered job rebuilds the same bytes); the ISO is what cloud-init
reads (volume id cidata, lowercase names with dashes) and only its owner may read it."""

from __future__ import annotations

import email
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pycdlib
import pytest
import yaml

from tests.unit.test_guest_config import generate_key
from workers.cloud_init import parse_host_keys, seed_files, write_seed_iso

MAC = "52:54:00:AB:cd:01"


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="module")
def our_key(key_dir: Path) -> str:
    return generate_key(key_dir, "ed25519", comment="archq-user").with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def their_key(key_dir: Path) -> str:
    return generate_key(key_dir, "ecdsa", 256, comment="their-laptop").with_suffix(".pub").read_text().strip()


def cloud_config_of(document: bytes) -> dict:
    text = document.decode()
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


# --- seed files


def test_meta_data_names_the_instance_and_its_hostname(our_key):
    files = seed_files("7f3c2a10-0000-4000-8000-000000000001", "Web1", [our_key], None, MAC)

    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": "7f3c2a10-0000-4000-8000-000000000001",
        "local-hostname": "web1",
    }


def test_a_numeric_vm_id_stays_a_string_in_meta_data(our_key):
    files = seed_files("12345", "web1", [our_key], None, None)

    assert yaml.safe_load(files["meta-data"])["instance-id"] == "12345"


def test_without_user_data_the_seed_is_our_cloud_config(our_key):
    files = seed_files("vm-1", "web1", [our_key + "\n", our_key], None, MAC)

    assert cloud_config_of(files["user-data"]) == {
        "hostname": "web1",
        "ssh_authorized_keys": [our_key],
        "ssh_pwauth": False,
        "manual_cache_clean": True,
    }


def test_our_keys_are_refused_when_they_are_not_valid_keys():
    with pytest.raises(ValueError, match="private key"):
        seed_files("vm-1", "web1", ["-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n"], None, None)


def test_their_cloud_config_is_merged_keeping_their_keys_and_settings(our_key, their_key):
    user_data = (
        "#cloud-config\n"
        "# a comment that does not survive\n"
        "packages: [htop, jq]\n"
        "ssh_authorized_keys:\n"
        f"  - {their_key}\n"
        '  - no-pty,from="10.0.0.0/8" ssh-ed25519 AAAAkept-as-they-wrote-it backup\n'
        "runcmd:\n"
        "  - [sh, -c, 'echo ok > /run/ok']\n"
        "write_files:\n"
        "  - path: /etc/app.conf\n"
        "    content: |\n"
        "      token = s3cret\n"
        "hostname: their-name\n"
    )
    merged = cloud_config_of(seed_files("vm-1", "web1", [our_key], user_data, MAC)["user-data"])

    assert merged["ssh_authorized_keys"] == [
        their_key,
        'no-pty,from="10.0.0.0/8" ssh-ed25519 AAAAkept-as-they-wrote-it backup',
        our_key,
    ]
    assert merged["packages"] == ["htop", "jq"]
    assert merged["runcmd"] == [["sh", "-c", "echo ok > /run/ok"]]
    assert merged["write_files"] == [{"path": "/etc/app.conf", "content": "token = s3cret\n"}]
    assert merged["hostname"] == "web1"
    assert (merged["ssh_pwauth"], merged["manual_cache_clean"]) == (False, True)


def test_a_key_they_already_list_is_not_added_twice_even_with_another_comment(our_key):
    kind, data, _ = our_key.split()
    user_data = f"#cloud-config\nssh_authorized_keys:\n  - {kind} {data} same-key-other-comment\n"

    merged = cloud_config_of(seed_files("vm-1", "web1", [our_key], user_data, None)["user-data"])

    assert merged["ssh_authorized_keys"] == [f"{kind} {data} same-key-other-comment"]


def test_their_own_ssh_pwauth_and_manual_cache_clean_win(our_key):
    user_data = "#cloud-config\nssh_pwauth: true\nmanual_cache_clean: false\n"

    merged = cloud_config_of(seed_files("vm-1", "web1", [our_key], user_data, None)["user-data"])

    assert (merged["ssh_pwauth"], merged["manual_cache_clean"]) == (True, False)
    assert merged["ssh_authorized_keys"] == [our_key]


def test_a_cloud_config_with_only_its_header_gets_ours(our_key):
    merged = cloud_config_of(seed_files("vm-1", "web1", [our_key], "#cloud-config\n", None)["user-data"])

    assert merged == {
        "ssh_authorized_keys": [our_key],
        "hostname": "web1",
        "ssh_pwauth": False,
        "manual_cache_clean": True,
    }


def test_a_script_travels_beside_our_cloud_config_in_a_mime_multipart(our_key):
    script = "#!/bin/sh\necho 'héllo' > /run/greeting\n"

    message = email.message_from_bytes(seed_files("vm-1", "web1", [our_key], script, None)["user-data"])

    assert message.get_content_type() == "multipart/mixed"
    assert message["MIME-Version"] == "1.0"
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert cloud_config_of(parts[0].get_payload(decode=True)) == {
        "hostname": "web1",
        "ssh_authorized_keys": [our_key],
        "ssh_pwauth": False,
        "manual_cache_clean": True,
    }
    assert parts[1].get_payload(decode=True) == script.encode()
    assert [p.get_filename() for p in parts] == ["archq.cfg", "user-script"]


def test_network_config_matches_the_nic_by_mac_and_names_it_eth0(our_key):
    files = seed_files("vm-1", "web1", [our_key], None, MAC)

    assert yaml.safe_load(files["network-config"]) == {
        "version": 2,
        "ethernets": {
            "eth0": {"match": {"macaddress": "52:54:00:ab:cd:01"}, "set-name": "eth0", "dhcp4": True},
        },
    }


def test_a_mac_of_decimal_digits_stays_a_string_not_a_yaml_1_1_sexagesimal_number(our_key):
    files = seed_files("vm-1", "web1", [our_key], None, "52:54:00:12:34:56")

    assert yaml.safe_load(files["network-config"])["ethernets"]["eth0"]["match"]["macaddress"] == "52:54:00:12:34:56"


def test_a_vm_without_a_nic_gets_no_network_config(our_key):
    assert sorted(seed_files("vm-1", "web1", [our_key], None, None)) == ["meta-data", "user-data"]


@pytest.mark.parametrize("mac", ["52:54:00:ab:cd", "52-54-00-ab-cd-01", "52:54:00:ab:cd:0g", ""])
def test_a_malformed_mac_is_refused(our_key, mac):
    with pytest.raises(ValueError, match="six hex octets"):
        seed_files("vm-1", "web1", [our_key], None, mac)


@pytest.mark.parametrize(
    "user_data",
    [None, "#cloud-config\npackages: [htop]\nssh_authorized_keys: []\n", "#!/bin/sh\necho hi\n"],
)
def test_the_same_job_gives_the_same_bytes(our_key, their_key, user_data):
    first = seed_files("vm-1", "web1", [our_key, their_key], user_data, MAC)
    again = seed_files("vm-1", "web1", [our_key, their_key], user_data, MAC)

    assert first == again


def test_different_scripts_get_different_multipart_boundaries(our_key):
    one = seed_files("vm-1", "web1", [our_key], "#!/bin/sh\necho 1\n", None)["user-data"]
    two = seed_files("vm-1", "web1", [our_key], "#!/bin/sh\necho 2\n", None)["user-data"]

    assert email.message_from_bytes(one).get_boundary() != email.message_from_bytes(two).get_boundary()


def test_invalid_user_data_is_refused_rather_than_written(our_key):
    with pytest.raises(ValueError, match="must start with"):
        seed_files("vm-1", "web1", [our_key], "echo no shebang\n", None)


def test_an_invalid_hostname_is_refused(our_key):
    with pytest.raises(ValueError, match="do not start or end with '-'"):
        seed_files("vm-1", "-web", [our_key], None, None)


# --- the ISO


@pytest.fixture
def files(our_key) -> dict[str, bytes]:
    return seed_files("vm-1", "web1", [our_key], "#!/bin/sh\necho hi\n", MAC)


def read_back(path: Path, **where: str) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, **where)
        return out.getvalue()
    finally:
        iso.close()


def test_the_iso_has_volume_id_cidata_and_the_files_under_their_rock_ridge_and_joliet_names(tmp_path, files):
    dest = tmp_path / "seed.iso"
    write_seed_iso(files, dest)

    iso = pycdlib.PyCdlib()
    iso.open(str(dest))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        assert iso.joliet_vd is not None
        rock_ridge = sorted(c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/") if c.is_file())
        joliet = sorted(c.file_identifier().decode("utf-16-be") for c in iso.list_children(joliet_path="/"))
    finally:
        iso.close()
    assert rock_ridge == ["meta-data", "network-config", "user-data"]
    assert [n for n in joliet if n not in (".", "..", "\x00", "\x01")] == rock_ridge
    for name, data in files.items():
        assert read_back(dest, rr_path=f"/{name}") == data
        assert read_back(dest, joliet_path=f"/{name}") == data


def test_the_iso_without_network_config_has_two_files(tmp_path, our_key):
    dest = tmp_path / "seed.iso"
    write_seed_iso(seed_files("vm-1", "web1", [our_key], None, None), dest)

    iso = pycdlib.PyCdlib()
    iso.open(str(dest))
    try:
        names = sorted(c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/") if c.is_file())
    finally:
        iso.close()
    assert names == ["meta-data", "user-data"]


@pytest.mark.skipif(shutil.which("isoinfo") is None, reason="isoinfo (genisoimage) is not installed")
def test_isoinfo_reads_the_same_volume_id_and_bytes(tmp_path, files):
    dest = tmp_path / "seed.iso"
    write_seed_iso(files, dest)

    described = subprocess.run(["isoinfo", "-d", "-i", str(dest)], check=True, capture_output=True, text=True)
    assert "Volume id: cidata" in described.stdout
    assert "Rock Ridge signatures version 1 found" in described.stdout
    for name, data in files.items():
        for flag in ("-R", "-J"):
            extracted = subprocess.run(
                ["isoinfo", flag, "-x", f"/{name}", "-i", str(dest)], check=True, capture_output=True
            ).stdout
            assert extracted == data, (name, flag)


def test_the_iso_is_readable_by_its_owner_only_whatever_the_umask(tmp_path, files):
    dest = tmp_path / "seed.iso"
    old = os.umask(0)
    try:
        write_seed_iso(files, dest)
    finally:
        os.umask(old)

    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_rewriting_the_iso_replaces_it_and_leaves_no_temporary_file(tmp_path, files, our_key):
    dest = tmp_path / "seed.iso"
    write_seed_iso(files, dest)
    write_seed_iso(seed_files("vm-1", "renamed", [our_key], None, None), dest)

    assert yaml.safe_load(read_back(dest, rr_path="/meta-data"))["local-hostname"] == "renamed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]


def test_a_failed_write_keeps_the_previous_iso_and_leaves_no_temporary_file(tmp_path, files, monkeypatch):
    dest = tmp_path / "seed.iso"
    write_seed_iso(files, dest)
    before = dest.read_bytes()

    def broken_write(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pycdlib.PyCdlib, "write_fp", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_seed_iso(files, dest)

    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]


# --- host keys from the console


@pytest.fixture(scope="module")
def host_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A guest's host key lines as /etc/ssh/ssh_host_*_key.pub hold them (`type base64 root@host`)."""
    directory = tmp_path_factory.mktemp("host-keys")
    return {
        kind: generate_key(directory, kind, bits, comment="root@web1").with_suffix(".pub").read_text().strip()
        for kind, bits in (("ecdsa", 256), ("ed25519", None), ("rsa", 3072))
    }


@pytest.fixture(scope="module")
def new_host_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("new-host-keys")
    return {
        kind: generate_key(directory, kind, bits, comment="root@web1").with_suffix(".pub").read_text().strip()
        for kind, bits in (("ecdsa", 256), ("ed25519", None))
    }


def without_comment(line: str) -> str:
    return " ".join(line.split()[:2])


def key_block(lines: list[str]) -> list[str]:
    """What cloud-init 22.4's write-ssh-key-fingerprints prints: the fingerprints through logger (tagged
    `cloud-init:`), then the .pub files verbatim between the KEYS markers."""
    return [
        "cloud-init: #############################################################",
        "cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
        "cloud-init: 256 SHA256:2q9H7mH8wtcqU6YfRjkP0h0Q8kXbq8n2o0rY0Zb1m0c root@web1 (ECDSA)",
        "cloud-init: 256 SHA256:Yl0J9bJcIuG6gF7l2q2c8cYwXyF0m8v1W3c9Qe5Qv3U root@web1 (ED25519)",
        "cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
        "cloud-init: #############################################################",
        "-----BEGIN SSH HOST KEY KEYS-----",
        *lines,
        "-----END SSH HOST KEY KEYS-----",
    ]


def console(*chunks: list[str]) -> str:
    """A serial log: kernel and systemd lines around cloud-init's, every line ending in \\r\\n as a tty writes."""
    boot = [
        "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)",
        "[    2.912345] EXT4-fs (vda): mounted filesystem with ordered data mode. Quota mode: none.",
        "[   21.004211] cloud-init[412]: Cloud-init v. 22.4.2 running 'init' at Mon, 02 Dec 2026 03:01:20 +0000.",
        "ci-info: +++++++++++++++++++++++++Net device info+++++++++++++++++++++++++",
        "[  OK  ] Started ssh.service - OpenBSD Secure Shell server.",
        "[   40.871102] cloud-init[598]: Cloud-init v. 22.4.2 running 'modules:final' at Mon, 02 Dec 2026.",
    ]
    lines = list(boot)
    for chunk in chunks:
        lines += chunk
        lines.append("[   41.310022] cloud-init[598]: Cloud-init v. 22.4.2 finished. Datasource DataSourceNoCloud.")
    lines.append("web1 login: ")
    return "\r\n".join(lines) + "\r\n"


def test_host_keys_are_read_from_a_realistic_console_without_their_comments(host_keys):
    block = key_block(
        [host_keys["ecdsa"], "[   41.002311] random: crng init done", host_keys["ed25519"], host_keys["rsa"]]
    )

    assert parse_host_keys(console(block)) == [without_comment(host_keys[k]) for k in ("ecdsa", "ed25519", "rsa")]


def test_a_prefix_before_the_key_on_its_line_is_tolerated(host_keys):
    # Older cloud-init sent the whole block through logger with the `ec2:` tag.
    block = [
        "ec2: -----BEGIN SSH HOST KEY KEYS-----",
        f"ec2: {host_keys['ed25519']}",
        "ec2: -----END SSH HOST KEY KEYS-----",
    ]

    assert parse_host_keys(console(block)) == [without_comment(host_keys["ed25519"])]


def test_a_key_cut_by_kernel_noise_in_the_middle_of_its_line_is_skipped(host_keys):
    kind, data, comment = host_keys["rsa"].split()
    cut = f"{kind} {data[:200]}[   41.1] virtio_net virtio0 eth0: renamed\r\n{data[200:]} {comment}"
    block = key_block([host_keys["ed25519"], *cut.split("\r\n")])

    assert parse_host_keys(console(block)) == [without_comment(host_keys["ed25519"])]


def test_of_two_blocks_the_last_one_wins(host_keys, new_host_keys):
    first = key_block(list(host_keys.values()))
    second = key_block(list(new_host_keys.values()))

    assert parse_host_keys(console(first, second)) == [without_comment(k) for k in new_host_keys.values()]


def test_a_block_without_its_end_marker_gives_no_keys(host_keys):
    incomplete = key_block(list(host_keys.values()))[:-1]

    assert parse_host_keys(console(incomplete)) == []


def test_an_incomplete_later_block_leaves_the_last_complete_one(host_keys, new_host_keys):
    complete = key_block(list(host_keys.values()))
    cut_off = key_block(list(new_host_keys.values()))[:-2]

    assert parse_host_keys(console(complete, cut_off)) == [without_comment(k) for k in host_keys.values()]


def test_an_end_marker_without_a_begin_is_ignored(host_keys):
    assert parse_host_keys(console([host_keys["ed25519"], "-----END SSH HOST KEY KEYS-----"])) == []


def test_a_console_without_any_block_gives_no_keys():
    assert parse_host_keys(console()) == []
    assert parse_host_keys("") == []


def test_invalid_lines_inside_the_block_are_skipped(host_keys):
    block = key_block(
        [
            host_keys["ed25519"],
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP root@web1",
            "ssh-ed25519 AAAAnot-a-key root@web1",
            host_keys["ed25519"],
        ]
    )

    assert parse_host_keys(console(block)) == [without_comment(host_keys["ed25519"])]
