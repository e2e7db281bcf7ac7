"""The NoCloud seed a guest's cloud-init reads (guest-lab B.4), and the host keys it prints back on the console
(guest-lab B.5).

Seed files are a pure function of the job's inputs, so a redelivered create job rebuilds the same bytes. User data
can hold secrets: nothing here logs it, and the ISO is written readable by its owner only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import cast

import pycdlib
import yaml

from queues.guest_config import (
    CLOUD_CONFIG_HEADER,
    KEY_TYPES,
    cloud_config,
    parse_ssh_public_key,
    validate_hostname,
    validate_user_data,
)

META_DATA = "meta-data"
USER_DATA = "user-data"
NETWORK_CONFIG = "network-config"
VOLUME_ID = "cidata"
GUEST_NIC = "eth0"

BEGIN_HOST_KEYS = "-----BEGIN SSH HOST KEY KEYS-----"
END_HOST_KEYS = "-----END SSH HOST KEY KEYS-----"

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# A key may follow a prefix on its console line (a syslog tag such as `ec2:` in older cloud-init, a timestamp);
# the key itself runs from its type to the end of the line.
_KEY_ON_LINE = re.compile(r"(?:^|\s)((?:" + "|".join(re.escape(t) for t in KEY_TYPES) + r")\s+\S+.*)$")


def seed_files(
    vm_id: str, hostname: str, ssh_authorized_keys: list[str], user_data: str | None, mac: str | None
) -> dict[str, bytes]:
    """The files of the seed: `meta-data`, `user-data`, and `network-config` when the VM has a NIC (`mac`).

    The user's `#cloud-config` is merged with ours (their keys kept, ours added, our hostname); a `#!` script
    travels beside our cloud-config in a MIME multipart, the format cloud-init documents for mixed user data.
    """
    hostname = validate_hostname(hostname)
    keys = _our_keys(ssh_authorized_keys)
    files = {
        META_DATA: _yaml({"instance-id": vm_id, "local-hostname": hostname}),
        USER_DATA: _user_data(hostname, keys, user_data),
    }
    if mac is not None:
        files[NETWORK_CONFIG] = _network_config(mac)
    # Without a NIC there is no network-config: cloud-init's fallback then looks for a NIC and finds none, quietly.
    return files


def _our_keys(lines: list[str]) -> list[str]:
    """Our keys normalised by the same parser the API validated them with, duplicates dropped, order kept."""
    seen: dict[str, str] = {}
    for line in lines:
        key = parse_ssh_public_key(line)
        seen.setdefault(key.key, key.line)
    return list(seen.values())


def _our_cloud_config(hostname: str, keys: list[str]) -> dict[str, object]:
    return {
        "hostname": hostname,
        "ssh_authorized_keys": keys,
        # Key-only logins: a Debian cloud image has no password set, and a guessable one must never be enabled.
        "ssh_pwauth": False,
        # If the seed goes missing (ejected, or absent after a move) cloud-init would otherwise decide this is a new
        # instance, fall back to DataSourceNone and make new SSH host keys (guest-lab B.7): the known_hosts entry we
        # took from the console would stop matching. archq never boots a disk that another VM booted (each VM gets
        # its own overlay of a never-booted base), so the cache it keeps is always this VM's own.
        "manual_cache_clean": True,
    }


def _user_data(hostname: str, keys: list[str], user_data: str | None) -> bytes:
    ours = _our_cloud_config(hostname, keys)
    if user_data is None:
        return _cloud_config_document(ours)
    # The API validated it; checking again costs little and keeps a bad job from writing a seed cloud-init ignores.
    validate_user_data(user_data)
    if user_data.split("\n", 1)[0].rstrip() == CLOUD_CONFIG_HEADER:
        return _cloud_config_document(_merge(cloud_config(user_data), ours))
    return _multipart(_cloud_config_document(ours), user_data.encode("utf-8"))


def _merge(theirs: dict[str, object], ours: dict[str, object]) -> dict[str, object]:
    """Their document with our keys added to theirs and our hostname; their other settings, including their own
    `ssh_pwauth` or `manual_cache_clean`, win. Their YAML comments do not survive the round trip."""
    merged = dict(theirs)
    # validate_user_data checked that theirs is a list of strings; ours is _our_cloud_config's.
    their_keys = list(cast(list[str], theirs.get("ssh_authorized_keys") or []))
    their_identities = set()
    for line in their_keys:
        # Their entries may be in forms we do not accept ourselves (options, other types): kept verbatim, and
        # only compared with ours when they parse.
        with contextlib.suppress(ValueError):
            their_identities.add(parse_ssh_public_key(line).key)
    our_keys = cast(list[str], ours["ssh_authorized_keys"])
    added = [line for line in our_keys if parse_ssh_public_key(line).key not in their_identities]
    merged["ssh_authorized_keys"] = their_keys + added
    # Ours: the API reports this name and the guest must carry it.
    merged["hostname"] = ours["hostname"]
    for setting in ("ssh_pwauth", "manual_cache_clean"):
        merged.setdefault(setting, ours[setting])
    return merged


def _cloud_config_document(config: dict[str, object]) -> bytes:
    return f"{CLOUD_CONFIG_HEADER}\n".encode() + _yaml(config)


def _yaml(document: dict[str, object]) -> bytes:
    # Insertion order, not sorted: the same inputs give the same order, and the user's keys stay where they were.
    # The wide width keeps each key line on one line instead of folded.
    return yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 20
    ).encode("utf-8")


def _multipart(cloud_config_part: bytes, script: bytes) -> bytes:
    # email picks a random boundary; one derived from the content makes the bytes repeatable, and a SHA-256 of the
    # parts cannot occur inside them short of a preimage.
    digest = hashlib.sha256(cloud_config_part + b"\0" + script).hexdigest()
    message = MIMEMultipart(boundary=f"archq-{digest}")
    for payload, subtype, filename in (
        (cloud_config_part, "cloud-config", "archq.cfg"),
        (script, "x-shellscript", "user-script"),
    ):
        part = MIMEText(payload.decode("utf-8"), subtype, "utf-8")
        part.add_header("Content-Disposition", "attachment", filename=filename)
        message.attach(part)
    return message.as_bytes()


def _network_config(mac: str) -> bytes:
    address = mac.lower()
    if not _MAC.fullmatch(address):
        raise ValueError("the MAC address must be six hex octets separated by ':'")
    # Matched by MAC with a fixed name: a `name: en*` match makes Debian's ifupdown renderer write `iface nic0` and
    # the guest never gets a lease (guest-lab B.7).
    return _yaml(
        {
            "version": 2,
            "ethernets": {GUEST_NIC: {"match": {"macaddress": address}, "set-name": GUEST_NIC, "dhcp4": True}},
        }
    )


def _iso9660_path(name: str) -> str:
    # Plain ISO 9660 allows no lowercase or '-'; cloud-init reads the Rock Ridge (Linux) or Joliet names instead.
    return "/" + name.upper().replace("-", "_") + ".;1"


def write_seed_iso(files: dict[str, bytes], dest: Path) -> None:
    """Write `files` as a NoCloud seed ISO at `dest`, atomically (a temp name in the same directory, renamed into
    place) and with mode 0600: user data may hold secrets.

    QEMU runs as libvirt-qemu, yet root-owned 0600 is enough: libvirt's dynamic ownership (qemu.conf default)
    chowns the file to libvirt-qemu when the domain starts, keeping the mode; being read-only, it is not chowned
    back when the domain stops. Measured here: the directory of `dest` must be searchable by libvirt-qemu (0711 or
    0755 work, with 0700 QEMU fails with Permission denied); libvirt changes the file's owner, never a directory's.
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID)
    try:
        for name in sorted(files):
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), _iso9660_path(name), rr_name=name, joliet_path=f"/{name}")
        fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            # mkstemp creates the file 0600 already; fchmod says so explicitly whatever the umask.
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
    finally:
        iso.close()
    # The rename is durable only once the directory entry is on disk.
    directory = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def parse_host_keys(console_text: str) -> list[str]:
    """The guest's SSH host keys (`type base64`, no comment) from the last complete `BEGIN/END SSH HOST KEY KEYS`
    block of a serial console log, or [] when there is none.

    cloud-init prints the block once per instance (cc_keys_to_console); a later block means the guest made new
    keys (a new instance, a lost seed), so the last one is the one sshd serves. Kernel messages may land between
    its lines: lines that do not hold a valid key are skipped.
    """
    block: list[str] | None = None
    last: list[str] = []
    for raw in console_text.splitlines():
        line = raw.strip()
        if BEGIN_HOST_KEYS in line:
            block = []
        elif END_HOST_KEYS in line:
            if block is not None:
                last = block
            block = None
        elif block is not None:
            found = _KEY_ON_LINE.search(line)
            if found:
                with contextlib.suppress(ValueError):
                    block.append(parse_ssh_public_key(found.group(1)).key)
    return list(dict.fromkeys(last))
