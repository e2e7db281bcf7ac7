"""What a user may hand a guest: SSH public keys, cloud-init user data, a hostname.

The API validates with these functions (their `ValueError` messages are the 422 field errors) and the worker uses
the same ones to normalise what it writes into the seed, so both sides agree on one definition. Messages never
repeat the user's data: user data and keys can hold secrets, and errors end up in logs and job records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

import yaml

MAX_SSH_KEY_BYTES = 16 * 1024
MAX_USER_DATA_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
MAX_HOSTNAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

CLOUD_CONFIG_HEADER = "#cloud-config"
SCRIPT_HEADER = "#!"

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA_P256 = "sk-ecdsa-sha2-nistp256@openssh.com"
# Key type -> the curve name the blob repeats and the length of the uncompressed point (0x04 || X || Y).
ECDSA_CURVES: dict[str, tuple[str, int]] = {
    "ecdsa-sha2-nistp256": ("nistp256", 65),
    "ecdsa-sha2-nistp384": ("nistp384", 97),
    "ecdsa-sha2-nistp521": ("nistp521", 133),
}
KEY_TYPES: tuple[str, ...] = (ED25519, *ECDSA_CURVES, RSA, SK_ED25519, SK_ECDSA_P256)
ED25519_KEY_BYTES = 32

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@dataclass(frozen=True)
class SshPublicKey:
    """One OpenSSH public key, checked down to the fields of its blob."""

    type: str
    base64: str
    comment: str
    fingerprint: str

    @property
    def key(self) -> str:
        """`type base64`: what identifies the key, as known_hosts and comparisons want it."""
        return f"{self.type} {self.base64}"

    @property
    def line(self) -> str:
        """`type base64 comment` (no trailing space without a comment), as authorized_keys wants it."""
        return f"{self.key} {self.comment}" if self.comment else self.key


class _Blob:
    """Reads the RFC 4251 `string` and `mpint` fields of a key blob; any overrun is a malformed key."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def string(self) -> bytes:
        if self._pos + 4 > len(self._data):
            raise ValueError("the key data is truncated")
        length = int.from_bytes(self._data[self._pos : self._pos + 4], "big")
        start = self._pos + 4
        if start + length > len(self._data):
            raise ValueError("the key data is truncated")
        self._pos = start + length
        return self._data[start : self._pos]

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise ValueError("the key data holds a negative number")
        return int.from_bytes(raw, "big")

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ValueError("the key data has trailing bytes")


def parse_ssh_public_key(line: str) -> SshPublicKey:
    """Parse one OpenSSH public key line (`type base64 [comment]`); `ValueError` says what is wrong."""
    try:
        size = len(line.encode("utf-8"))
    except UnicodeEncodeError:
        # A JSON string may carry lone surrogates; the key would later fail to be written into the seed's YAML.
        raise ValueError("the SSH public key is not valid UTF-8 text") from None
    if size > MAX_SSH_KEY_BYTES:
        raise ValueError(f"an SSH public key is at most {MAX_SSH_KEY_BYTES} bytes")
    # Before the line checks: a pasted private key is several lines, and "give the .pub" is the useful answer.
    if "PRIVATE KEY-----" in line or line.lstrip().startswith("PuTTY-User-Key-File"):
        raise ValueError("this is a private key; give the .pub")
    if "BEGIN SSH2 PUBLIC KEY" in line:
        raise ValueError("this is an RFC 4716 key; convert it with `ssh-keygen -i -f KEY` to the one-line format")
    text = line.strip()
    if not text:
        raise ValueError("the SSH public key is empty")
    # splitlines, not "\n": it also breaks at \r, \v, \f and the Unicode separators, as the readers of the key do.
    if len(text.splitlines()) > 1:
        raise ValueError("give one SSH public key per entry, on one line")
    # Tabs separate fields in authorized_keys; any other control character (escape sequences, NUL) has no business
    # in a key and could rewrite a terminal or a YAML document further down.
    if any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) < 0xA0 for c in text):
        raise ValueError("the SSH public key contains control characters")
    fields = text.split(None, 2)
    declared = fields[0]
    if declared == "ssh-dss":
        raise ValueError("DSA keys are not supported; OpenSSH disabled them")
    if declared not in KEY_TYPES:
        # A known type further along means something precedes the key: authorized_keys options such as
        # `from="10.0.0.1"` or `no-pty`, which would change what the key may do if written as given.
        if any(word in (*KEY_TYPES, "ssh-dss") for word in text.split()[1:]):
            raise ValueError("authorized_keys options are not accepted; give only `type base64 [comment]`")
        raise ValueError(f"unsupported SSH key type; use one of {', '.join(KEY_TYPES)}")
    if len(fields) < 2:
        raise ValueError("the SSH public key has no key data after its type")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the SSH public key data is not valid base64") from None
    _check_blob(declared, blob)
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    comment = fields[2].strip() if len(fields) > 2 else ""
    return SshPublicKey(
        type=declared,
        base64=base64.b64encode(blob).decode("ascii"),
        comment=comment,
        fingerprint=f"SHA256:{digest}",
    )


def _check_blob(declared: str, blob: bytes) -> None:
    """The blob must be a well-formed key of the declared type: a pasted key that lost or gained characters, or a
    type edited by hand, would otherwise be accepted and only fail at login."""
    reader = _Blob(blob)
    try:
        inner = reader.string().decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the key data does not start with a key type") from None
    if inner != declared:
        raise ValueError("the key type inside the key data does not match the declared type")
    if declared in (ED25519, SK_ED25519):
        if len(reader.string()) != ED25519_KEY_BYTES:
            raise ValueError("an Ed25519 public key is 32 bytes")
    elif declared in ECDSA_CURVES or declared == SK_ECDSA_P256:
        # The security-key variant exists for P-256 only.
        curve, point_length = ECDSA_CURVES["ecdsa-sha2-nistp256" if declared == SK_ECDSA_P256 else declared]
        if reader.string() != curve.encode("ascii"):
            raise ValueError("the ECDSA curve inside the key data does not match the declared type")
        point = reader.string()
        if len(point) != point_length or point[0] != 0x04:
            raise ValueError(f"an {curve} public key is an uncompressed point of {point_length} bytes")
    else:
        exponent = reader.mpint()
        modulus = reader.mpint()
        if exponent < 3 or exponent % 2 == 0:
            raise ValueError("the RSA public exponent is invalid")
        if modulus.bit_length() < MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits; this one has {modulus.bit_length()}")
    if declared.startswith("sk-"):
        # Security keys carry the FIDO application (normally "ssh:") the authenticator registered the key for.
        reader.string()
    reader.end()


def validate_user_data(data: str) -> None:
    """User data is at most `MAX_USER_DATA_BYTES` of UTF-8 and either a `#cloud-config` YAML mapping or a `#!`
    script; `ValueError` names what is wrong (never the content)."""
    try:
        size = len(data.encode("utf-8"))
    except UnicodeEncodeError:
        # The API gets a JSON string, and JSON can carry lone surrogates ("\ud800") that have no UTF-8 form.
        raise ValueError("user data is not valid UTF-8 text") from None
    if size > MAX_USER_DATA_BYTES:
        raise ValueError(f"user data is {size} bytes of UTF-8; at most {MAX_USER_DATA_BYTES} (64 KiB)")
    first_line = data.split("\n", 1)[0].rstrip()
    # Exact first line: cloud-init picks the longest known header, so `#cloud-config-archive` or
    # `#cloud-config-jsonp` would be read as other formats, not as the mapping the worker merges its keys into.
    if first_line == CLOUD_CONFIG_HEADER:
        cloud_config(data)
        return
    if data.startswith(SCRIPT_HEADER):
        return
    raise ValueError("user data must start with `#cloud-config` (YAML) or `#!` (a script)")


def cloud_config(data: str) -> dict[str, object]:
    """The mapping of a `#cloud-config` document (empty when it only has the header); `ValueError` when it is not
    YAML, not a mapping, or has an `ssh_authorized_keys` the worker cannot merge into."""
    try:
        loaded = yaml.safe_load(data)
    except yaml.MarkedYAMLError as exc:
        # Only the position and the parser's complaint: str(exc) quotes the offending line, which may be a secret.
        where = (
            f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        )
        raise ValueError(f"#cloud-config user data is not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError:
        raise ValueError("#cloud-config user data is not valid YAML") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError("#cloud-config user data must be a YAML mapping (keys such as `packages:`, `runcmd:`)")
    keys = loaded.get("ssh_authorized_keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise ValueError("ssh_authorized_keys in #cloud-config user data must be a list of strings")
    return loaded


def user_data_digest(data: str) -> dict[str, object]:
    """What may be stored and shown about user data instead of the data itself: its SHA-256 and UTF-8 size."""
    encoded = data.encode("utf-8")
    return {"sha256": hashlib.sha256(encoded).hexdigest(), "size": len(encoded)}


def validate_hostname(name: str) -> str:
    """An RFC 1123 host name, lowercased: dot-separated labels of 1-63 characters a-z, 0-9 and '-', not starting or
    ending with '-', at most 253 characters in all."""
    if not name:
        raise ValueError("the hostname is empty")
    if len(name) > MAX_HOSTNAME_LENGTH:
        raise ValueError(f"a hostname is at most {MAX_HOSTNAME_LENGTH} characters")
    # ASCII before lowercasing: lower() maps some non-ASCII letters (the Kelvin sign) to ASCII ones.
    if not name.isascii():
        raise ValueError("hostname labels use only letters a-z, digits 0-9 and '-', and do not start or end with '-'")
    lowered = name.lower()
    for label in lowered.split("."):
        if not label:
            raise ValueError("hostname labels (between dots) must not be empty, nor have a leading or trailing dot")
        if len(label) > MAX_LABEL_LENGTH:
            raise ValueError(f"each hostname label (between dots) is at most {MAX_LABEL_LENGTH} characters")
        if not _LABEL.fullmatch(label):
            raise ValueError(
                "hostname labels use only letters a-z, digits 0-9 and '-', and do not start or end with '-'"
            )
    return lowered
