"""What a user may hand a guest: OpenSSH public keys checked down to their blob, user data that is a #cloud-config
mapping or a script within 64 KiB of UTF-8, RFC 1123 hostnames. Keys are real ones made by ssh-keygen."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from queues.guest_config import (
    MAX_USER_DATA_BYTES,
    parse_ssh_public_key,
    user_data_digest,
    validate_hostname,
    validate_user_data,
)


def generate_key(directory: Path, kind: str, bits: int | None = None, comment: str = "alice@laptop") -> Path:
    """A new key pair from ssh-keygen; returns the private key's path (the public one is next to it as .pub)."""
    path = directory / f"{kind}-{bits or 'default'}"
    if not path.exists():
        command = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)]
        if bits:
            command += ["-b", str(bits)]
        subprocess.run(command, check=True, capture_output=True)
    return path


def openssh_fingerprint(public_key: Path) -> str:
    return subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key)], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


def wire(*fields: bytes) -> bytes:
    """An RFC 4251 blob: each field as a 32-bit length and its bytes."""
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def line_for(kind: str, blob: bytes, comment: str = "") -> str:
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".rstrip()


# --- accepted keys


@pytest.mark.parametrize(
    ("kind", "bits", "declared"),
    [
        ("ed25519", None, "ssh-ed25519"),
        ("ecdsa", 256, "ecdsa-sha2-nistp256"),
        ("ecdsa", 384, "ecdsa-sha2-nistp384"),
        ("ecdsa", 521, "ecdsa-sha2-nistp521"),
        ("rsa", 2048, "ssh-rsa"),
        ("rsa", 3072, "ssh-rsa"),
    ],
)
def test_a_key_from_ssh_keygen_is_accepted_with_the_fingerprint_ssh_keygen_shows(keys, kind, bits, declared):
    public = generate_key(keys, kind, bits).with_suffix(".pub")
    key = parse_ssh_public_key(public.read_text())

    assert key.type == declared
    assert key.comment == "alice@laptop"
    assert key.line == public.read_text().strip()
    assert key.fingerprint.startswith("SHA256:")
    assert key.fingerprint in openssh_fingerprint(public)


def test_security_key_types_are_accepted_with_their_application():
    ed = wire(b"sk-ssh-ed25519@openssh.com", b"\x11" * 32, b"ssh:")
    ec = wire(b"sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", b"\x04" + b"\x22" * 64, b"ssh:")

    for kind, blob in (("sk-ssh-ed25519@openssh.com", ed), ("sk-ecdsa-sha2-nistp256@openssh.com", ec)):
        key = parse_ssh_public_key(line_for(kind, blob, "yubikey"))
        expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        assert (key.type, key.comment, key.fingerprint) == (kind, "yubikey", f"SHA256:{expected}")


def test_a_security_key_without_its_application_is_refused():
    blob = wire(b"sk-ssh-ed25519@openssh.com", b"\x11" * 32)
    with pytest.raises(ValueError, match="truncated"):
        parse_ssh_public_key(line_for("sk-ssh-ed25519@openssh.com", blob))


def test_whitespace_is_normalised_to_type_base64_comment(keys):
    kind, data, _ = generate_key(keys, "ed25519").with_suffix(".pub").read_text().split()
    key = parse_ssh_public_key(f"  {kind}\t {data}   work laptop  \r\n")

    assert key.line == f"{kind} {data} work laptop"
    assert key.key == f"{kind} {data}"


def test_a_key_without_comment_has_no_trailing_space(keys):
    kind, data, _ = generate_key(keys, "ed25519").with_suffix(".pub").read_text().split()
    key = parse_ssh_public_key(f"{kind} {data}")

    assert key.comment == ""
    assert key.line == key.key == f"{kind} {data}"


# --- refused keys


def test_rsa_below_2048_bits_is_refused_by_its_modulus(keys):
    public = generate_key(keys, "rsa", 1024).with_suffix(".pub")
    with pytest.raises(ValueError, match="at least 2048 bits; this one has 1024"):
        parse_ssh_public_key(public.read_text())


def test_a_dsa_key_is_refused_because_openssh_disabled_them(keys):
    try:
        public = generate_key(keys, "dsa").with_suffix(".pub")
    except subprocess.CalledProcessError:
        pytest.skip("this ssh-keygen no longer makes DSA keys")
    with pytest.raises(ValueError, match="DSA keys are not supported; OpenSSH disabled them"):
        parse_ssh_public_key(public.read_text())


def test_ssh_dss_is_refused_before_its_data_is_looked_at():
    with pytest.raises(ValueError, match="DSA keys are not supported"):
        parse_ssh_public_key("ssh-dss not-even-base64")


@pytest.mark.parametrize("pem", [False, True])
def test_a_pasted_private_key_is_refused_with_a_hint_to_give_the_pub(keys, pem):
    private = generate_key(keys, "rsa", 2048, comment="pem" if pem else "openssh")
    if pem:
        # The older PEM form ("BEGIN RSA PRIVATE KEY") that many tools still write.
        private = keys / "pem-rsa"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(private)],
            check=True,
            capture_output=True,
        )
    with pytest.raises(ValueError, match=r"this is a private key; give the \.pub"):
        parse_ssh_public_key(private.read_text())


def test_an_rfc4716_key_gets_a_conversion_hint(keys):
    public = generate_key(keys, "ed25519").with_suffix(".pub")
    rfc4716 = subprocess.run(["ssh-keygen", "-e", "-f", str(public)], check=True, capture_output=True, text=True).stdout
    with pytest.raises(ValueError, match="ssh-keygen -i"):
        parse_ssh_public_key(rfc4716)


@pytest.mark.parametrize(
    "options",
    [
        "no-pty",
        'from="10.0.0.0/8",no-agent-forwarding',
        'command="/usr/bin/backup --run"',
        'environment="PATH=/tmp"',
    ],
)
def test_authorized_keys_options_before_the_key_are_refused(keys, options):
    public = generate_key(keys, "ed25519").with_suffix(".pub").read_text().strip()
    with pytest.raises(ValueError, match="authorized_keys options are not accepted"):
        parse_ssh_public_key(f"{options} {public}")


def test_two_keys_in_one_entry_are_refused(keys):
    first = generate_key(keys, "ed25519").with_suffix(".pub").read_text()
    second = generate_key(keys, "ecdsa", 256).with_suffix(".pub").read_text()
    with pytest.raises(ValueError, match="one SSH public key per entry"):
        parse_ssh_public_key(first + second)


@pytest.mark.parametrize("control", ["\x1b[2J", "\x00", "\x07", "\x9b"])
def test_control_characters_in_the_comment_are_refused(keys, control):
    public = generate_key(keys, "ed25519").with_suffix(".pub").read_text().strip()
    with pytest.raises(ValueError, match="control characters"):
        parse_ssh_public_key(f"{public}{control}x")


def test_a_comment_with_a_lone_surrogate_from_json_is_refused_as_not_utf8(keys):
    public = generate_key(keys, "ed25519").with_suffix(".pub").read_text().strip()
    with pytest.raises(ValueError, match="not valid UTF-8"):
        parse_ssh_public_key(f"{public}\udc80")


def test_a_key_line_over_16_kib_is_refused(keys):
    public = generate_key(keys, "ed25519").with_suffix(".pub").read_text().strip()
    at_limit = public + " " + "c" * (16 * 1024 - len(public) - 1)

    assert len(parse_ssh_public_key(at_limit).line) == 16 * 1024
    with pytest.raises(ValueError, match="at most 16384 bytes"):
        parse_ssh_public_key(at_limit + "c")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("ssh-ed448 AAAA", "unsupported SSH key type"),
        ("hello world", "unsupported SSH key type"),
        ("ssh-ed25519", "no key data"),
        ("ssh-ed25519 AAAA!!!!", "not valid base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIQ", "not valid base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==", "truncated"),
    ],
)
def test_malformed_lines_are_refused_with_what_is_wrong(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_ssh_public_key(text)


def test_a_blob_cut_short_is_refused(keys):
    kind, data, _ = generate_key(keys, "ed25519").with_suffix(".pub").read_text().split()
    blob = base64.b64decode(data)
    with pytest.raises(ValueError, match="truncated"):
        parse_ssh_public_key(line_for(kind, blob[:-4]))


def test_a_blob_with_bytes_appended_is_refused(keys):
    kind, data, _ = generate_key(keys, "ecdsa", 384).with_suffix(".pub").read_text().split()
    blob = base64.b64decode(data)
    with pytest.raises(ValueError, match="trailing bytes"):
        parse_ssh_public_key(line_for(kind, blob + b"\x00\x00\x00\x00"))


def test_a_blob_with_a_wrong_field_length_is_refused(keys):
    """Same type, a key of 31 bytes instead of 32: base64 still decodes, the key does not."""
    blob = wire(b"ssh-ed25519", b"\x01" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        parse_ssh_public_key(line_for("ssh-ed25519", blob))


@pytest.mark.parametrize(
    ("source", "declared"),
    [
        (("ed25519", None), "ssh-rsa"),
        (("rsa", 3072), "ssh-ed25519"),
        (("ecdsa", 256), "ecdsa-sha2-nistp384"),
        (("ed25519", None), "sk-ssh-ed25519@openssh.com"),
    ],
)
def test_a_declared_type_that_differs_from_the_type_inside_the_blob_is_refused(keys, source, declared):
    _, data, _ = generate_key(keys, *source).with_suffix(".pub").read_text().split()
    with pytest.raises(ValueError, match="does not match the declared type"):
        parse_ssh_public_key(f"{declared} {data}")


def test_an_ecdsa_blob_naming_another_curve_is_refused():
    blob = wire(b"ecdsa-sha2-nistp384", b"nistp256", b"\x04" + b"\x01" * 64)
    with pytest.raises(ValueError, match="curve inside the key data does not match"):
        parse_ssh_public_key(line_for("ecdsa-sha2-nistp384", blob))


def test_an_rsa_blob_with_an_even_exponent_is_refused():
    blob = wire(b"ssh-rsa", b"\x02", b"\x00" + b"\xff" * 256)
    with pytest.raises(ValueError, match="RSA public exponent"):
        parse_ssh_public_key(line_for("ssh-rsa", blob))


def test_error_messages_do_not_repeat_the_key_data(keys):
    _, data, _ = generate_key(keys, "ed25519").with_suffix(".pub").read_text().split()
    with pytest.raises(ValueError) as refused:
        parse_ssh_public_key(f"ssh-rsa {data} secret-comment")
    assert data not in str(refused.value) and "secret-comment" not in str(refused.value)


# --- user data


def script_of_bytes(size: int, filler: str = "x") -> str:
    """A `#!` script of exactly `size` bytes of UTF-8 (`filler` is one character of any UTF-8 width)."""
    head = "#!/bin/sh\n# "
    width = len(filler.encode())
    room = size - len(head.encode()) - 1
    text = head + filler * (room // width) + "y" * (room % width) + "\n"
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize("filler", ["x", "é", "€", "🙂"])
def test_user_data_of_exactly_64_kib_of_utf8_is_accepted(filler):
    validate_user_data(script_of_bytes(MAX_USER_DATA_BYTES, filler))


@pytest.mark.parametrize("filler", ["x", "é", "🙂"])
def test_one_byte_more_than_64_kib_is_refused_counting_utf8_bytes_not_characters(filler):
    data = script_of_bytes(MAX_USER_DATA_BYTES + 1, filler)
    with pytest.raises(ValueError, match="65537 bytes of UTF-8; at most 65536"):
        validate_user_data(data)


def test_multibyte_text_far_below_64_ki_characters_is_still_refused_when_its_utf8_is_larger():
    data = "#!/bin/sh\n# " + "🙂" * 20_000
    assert len(data) < MAX_USER_DATA_BYTES < len(data.encode())
    with pytest.raises(ValueError, match="at most 65536"):
        validate_user_data(data)


def test_a_cloud_config_mapping_is_accepted():
    validate_user_data("#cloud-config\npackages: [htop]\nruncmd:\n  - [touch, /run/ok]\n")


def test_a_cloud_config_with_only_its_header_is_accepted():
    validate_user_data("#cloud-config\n")


def test_a_cloud_config_with_windows_line_endings_is_accepted():
    validate_user_data("#cloud-config\r\npackages:\r\n  - htop\r\n")


def test_a_script_is_accepted_whatever_its_interpreter():
    validate_user_data("#!/usr/bin/env python3\nprint('hi')\n")


def test_invalid_yaml_is_refused_with_its_position_but_not_its_content():
    data = "#cloud-config\npackages: [htop\npassword: hunter2: x\n"
    with pytest.raises(ValueError, match=r"not valid YAML at line \d+, column \d+") as refused:
        validate_user_data(data)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "document", ["#cloud-config\n- a\n- list\n", "#cloud-config\njust a string\n", "#cloud-config\n42\n"]
)
def test_a_cloud_config_that_is_not_a_mapping_is_refused(document):
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        validate_user_data(document)


def test_a_python_tag_is_refused_as_yaml_safe_load_does_not_construct_objects():
    with pytest.raises(ValueError, match="not valid YAML"):
        validate_user_data("#cloud-config\nx: !!python/object/apply:os.system ['true']\n")


@pytest.mark.parametrize("keys_value", ["ssh-ed25519 AAAA", "{a: 1}", "[1, 2]"])
def test_ssh_authorized_keys_that_is_not_a_list_of_strings_is_refused(keys_value):
    with pytest.raises(ValueError, match=r"ssh_authorized_keys .* must be a list of strings"):
        validate_user_data(f"#cloud-config\nssh_authorized_keys: {keys_value}\n")


@pytest.mark.parametrize(
    "data",
    [
        "",
        "packages: [htop]\n",
        " #cloud-config\n",
        "#cloud-config-archive\n- type: text/x-shellscript\n",
        "#include\nhttps://example.org/ud\n",
        "Content-Type: multipart/mixed\n",
        "#Cloud-Config\n",
    ],
)
def test_user_data_that_is_neither_cloud_config_nor_a_script_is_refused(data):
    with pytest.raises(ValueError, match=r"must start with `#cloud-config` \(YAML\) or `#!` \(a script\)"):
        validate_user_data(data)


def test_a_lone_surrogate_from_json_is_refused_as_not_utf8():
    # json.loads('"#!/bin/sh\\n\\ud800"') gives this str: valid JSON, no UTF-8 form.
    with pytest.raises(ValueError, match="not valid UTF-8"):
        validate_user_data("#!/bin/sh\n\ud800")


def test_the_digest_is_the_sha256_and_size_of_the_utf8_bytes():
    assert user_data_digest("#!/bin/sh\necho é\n") == {
        "sha256": hashlib.sha256("#!/bin/sh\necho é\n".encode()).hexdigest(),
        "size": 18,
    }


# --- hostnames


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web1", "web1"),
        ("Web-1", "web-1"),
        ("build.Example.ORG", "build.example.org"),
        ("1", "1"),
        ("0day-42", "0day-42"),
        ("a" * 63, "a" * 63),
        (".".join(["a" * 63] * 3 + ["b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61])),
    ],
)
def test_rfc1123_hostnames_are_accepted_lowercased(name, expected):
    assert validate_hostname(name) == expected


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("-web", "do not start or end with '-'"),
        ("web-", "do not start or end with '-'"),
        ("web_1", "only letters a-z, digits 0-9 and '-'"),
        ("web 1", "only letters a-z, digits 0-9 and '-'"),
        ("wéb", "only letters a-z, digits 0-9 and '-'"),
        ("\u212aelvin", "only letters a-z, digits 0-9 and '-'"),
        ("web\n", "only letters a-z, digits 0-9 and '-'"),
        ("a..b", "must not be empty"),
        ("web.", "trailing dot"),
        (".web", "leading"),
        ("a" * 64, "at most 63 characters"),
        (".".join(["a" * 63] * 3 + ["b" * 62]), "at most 253 characters"),
    ],
)
def test_hostnames_outside_rfc1123_are_refused_naming_the_rule(name, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_hostname(name)
