"""What the source worker checks and prepares on a migration target over SSH before the VM is touched:
free memory and disk, libvirt reachable, the emulator, the files the domain needs at the same paths (kernel,
initrd, base images: compared by SHA256, copied when missing) and the destination disks pre-created.

Every failed check is a WorkerError with its own `target_*` code; nothing on the source has changed then."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import shlex
import stat
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

from workers.errors import WorkerError

# Headroom on top of the guest's RAM: QEMU's own overhead and the target's page cache pressure.
MEMORY_MARGIN_MIB = 64
DISK_MARGIN_MIB = 256
_SSH_TIMEOUT_S = 120


@dataclass(frozen=True)
class Disk:
    target: str  # the guest's device name (vda)
    path: Path
    format: str
    virtual_size: int
    actual_size: int
    backing: Path | None = None
    backing_format: str | None = None


@dataclass(frozen=True)
class Plan:
    """What a domain needs on the target host, read from its XML and its disks."""

    uuid: str
    name: str
    domain_type: str
    memory_mib: int
    emulator: str | None
    # Read-only files at the same path on the target: kernel, initrd, the disks' backing images.
    artifacts: tuple[Path, ...] = ()
    # Directories the target's QEMU writes into (serial logs, disks).
    directories: tuple[Path, ...] = ()
    disks: tuple[Disk, ...] = field(default_factory=tuple)


def run(client: paramiko.SSHClient, argv: list[str], timeout: float = _SSH_TIMEOUT_S) -> tuple[int, str, str]:
    _stdin, stdout, stderr = client.exec_command(shlex.join(argv), timeout=timeout)
    out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), out, err


def sha256(path: Path) -> str:
    """The file's SHA256, computed again only when its size or modification time changed."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, _size: int, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remote_sha256(client: paramiko.SSHClient, path: Path) -> str | None:
    rc, out, _err = run(client, ["sha256sum", str(path)])
    return out.split()[0] if rc == 0 and out else None


# (target host, path, size, mtime) -> SHA256 the target's file had when it was hashed there: a command over
# SSH costs ~0.2 s, an SFTP stat ~1 ms, so a file already verified is trusted while it stays unchanged.
_verified: dict[tuple[str, str, int, int], str] = {}
_verified_lock = threading.Lock()


def disk_info(path: Path) -> list[dict]:
    """`qemu-img info --backing-chain` of a disk in use (-U: the running QEMU holds its lock)."""
    proc = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise WorkerError("disk_unreadable", f"qemu-img cannot read the VM's disk {path}: {proc.stderr.strip()}")
    chain = json.loads(proc.stdout)
    return chain if isinstance(chain, list) else [chain]


def check_memory(sftp: paramiko.SFTPClient, host: str, memory_mib: int) -> None:
    try:
        with sftp.open("/proc/meminfo") as fh:
            out = fh.read().decode()
    except OSError as exc:
        raise WorkerError("target_unreadable", f"cannot read /proc/meminfo on {host}: {exc}") from exc
    fields = {line.split(":")[0]: line.split()[1] for line in out.splitlines() if ":" in line}
    available = int(fields.get("MemAvailable", fields.get("MemFree", "0"))) // 1024
    if available < memory_mib + MEMORY_MARGIN_MIB:
        raise WorkerError(
            "target_low_memory",
            f"host {host} has {available} MiB of memory available; the VM needs {memory_mib} MiB "
            f"(+{MEMORY_MARGIN_MIB} MiB headroom). Free memory there or pick another target; the VM was not touched",
        )


def free_mib(client: paramiko.SSHClient, sftp: paramiko.SFTPClient, directory: Path) -> int:
    """Free space under `directory` (or its nearest existing ancestor) on the target, in MiB."""
    existing = directory
    while existing.parent != existing:
        try:
            sftp.stat(str(existing))
            break
        except OSError:
            existing = existing.parent
    try:
        # OpenSSH's statvfs@openssh.com extension: ~1 ms, where running df costs a command (~0.2 s). paramiko
        # has no public call for it; any surprise falls back to df.
        kind, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", str(existing))
        if kind == CMD_EXTENDED_REPLY:
            bsize, frsize, _blocks, _bfree, bavail = (msg.get_int64() for _ in range(5))
            return (bavail * (frsize or bsize)) // (1024 * 1024)
    except (OSError, paramiko.SSHException, EOFError):
        pass
    rc, out, err = run(client, ["df", "-Pk", str(existing)])
    if rc != 0:
        raise WorkerError("target_unreadable", f"cannot run df on the target: {err.strip()}")
    return int(out.splitlines()[-1].split()[3]) // 1024


def check_disk(
    client: paramiko.SSHClient, sftp: paramiko.SFTPClient, host: str, directory: Path, needed_bytes: int
) -> None:
    free = free_mib(client, sftp, directory)
    needed_mib = needed_bytes // (1024 * 1024) + DISK_MARGIN_MIB
    if free < needed_mib:
        raise WorkerError(
            "target_low_disk",
            f"host {host} has {free} MiB free under {directory}; the VM's files need {needed_mib} MiB "
            "(with headroom). Free space there or pick another target; the VM was not touched",
        )


def check_emulator(sftp: paramiko.SFTPClient, host: str, emulator: str | None) -> None:
    if not emulator:
        return
    try:
        executable = bool(sftp.stat(emulator).st_mode & stat.S_IXUSR)
    except OSError:
        executable = False
    if not executable:
        raise WorkerError(
            "target_emulator_missing",
            f"host {host} has no {emulator}: install its QEMU package (qemu-system-x86 / qemu-system-arm); "
            "the VM was not touched",
        )


def missing_artifacts(
    client: paramiko.SSHClient, sftp: paramiko.SFTPClient, host: str, artifacts: tuple[Path, ...]
) -> list[tuple[Path, str]]:
    """(path, local sha256) of the artifacts the target lacks. One there with other content is an error: a
    content-addressed file must never be silently replaced under another VM."""
    missing = []
    for path in artifacts:
        local = sha256(path)
        try:
            st = sftp.stat(str(path))
        except OSError:
            missing.append((path, local))
            continue
        key = (host, str(path), st.st_size or 0, st.st_mtime or 0)
        with _verified_lock:
            remote = _verified.get(key)
        if remote is None:
            remote = remote_sha256(client, path)
            if remote is None:
                missing.append((path, local))
                continue
            with _verified_lock:
                _verified[key] = remote
        if remote != local:
            raise WorkerError(
                "target_artifact_mismatch",
                f"{path} differs on the target (sha256 {remote[:12]}, here {local[:12]}); it must be the same "
                "file on both hosts. Fix or remove it there; the VM was not touched",
            )
    return missing


def copy_artifacts(
    client: paramiko.SSHClient, sftp: paramiko.SFTPClient, host: str, missing: list[tuple[Path, str]]
) -> None:
    for path, digest in missing:
        makedirs(sftp, host, path.parent)
        partial = f"{path}.{uuid.uuid4().hex}.part"
        sftp.put(str(path), partial)
        # Renamed into place only once its content is proven: a half copy is never taken for the image.
        if remote_sha256(client, Path(partial)) != digest:
            sftp.remove(partial)
            raise WorkerError("target_copy_failed", f"copying {path} to {host} did not verify; retry the job")
        sftp.chmod(partial, path.stat().st_mode & 0o777)
        sftp.posix_rename(partial, str(path))
        st = sftp.stat(str(path))
        with _verified_lock:
            _verified[(host, str(path), st.st_size or 0, st.st_mtime or 0)] = digest


def makedirs(sftp: paramiko.SFTPClient, host: str, directory: Path) -> None:
    try:
        sftp.stat(str(directory))
        return
    except OSError:
        pass
    if directory.parent != directory:
        makedirs(sftp, host, directory.parent)
    try:
        sftp.mkdir(str(directory), mode=0o755)
    except OSError as exc:
        try:
            sftp.stat(str(directory))  # made meanwhile by a concurrent job
        except OSError:
            raise WorkerError("target_unwritable", f"cannot create {directory} on {host}: {exc}") from exc


def precreate_disks(client: paramiko.SSHClient, sftp: paramiko.SFTPClient, host: str, disks: tuple[Disk, ...]) -> None:
    """Empty disks of the same size (and backing image) for libvirt's storage copy to fill. A qcow2 one is made
    here and sent over SFTP (about 200 KiB; `-u`: its backing image is named, not opened), because a command on
    the target costs an SSH exec (about 0.2 s, most of a small guest's migration overhead); a raw one, as large
    as the guest's disk, is made there."""
    for disk in disks:
        argv = ["qemu-img", "create", "-q", "-f", disk.format]
        if disk.backing is not None:
            argv += ["-u", "-b", str(disk.backing), "-F", disk.backing_format or "qcow2"]
        if disk.format != "qcow2":
            rc, _out, err = run(client, [*argv, str(disk.path), str(disk.virtual_size)])
            if rc != 0:
                raise WorkerError("target_disk_failed", f"cannot create {disk.path} on {host}: {err.strip()}")
            continue
        try:
            content = _empty_qcow2(tuple(argv), disk.virtual_size)
        except WorkerError as exc:
            raise exc.saying(f"cannot make {disk.path} for {host}: {exc.message}") from exc
        try:
            _put_whole(sftp, disk.path, content)
        except OSError as exc:
            raise WorkerError("target_disk_failed", f"cannot create {disk.path} on {host}: {exc}") from exc


def _put_whole(sftp: paramiko.SFTPClient, path: Path, source: Path | bytes) -> None:
    """`source` (a local file, or the bytes) written to `path` on the target under a temporary name beside it,
    renamed into place once complete: the target never sees half a disk, and a failed write leaves no partial
    file behind."""
    partial = f"{path}.{uuid.uuid4().hex}.part"
    try:
        if isinstance(source, bytes):
            sftp.putfo(io.BytesIO(source), partial)
        else:
            sftp.put(str(source), partial)
        sftp.posix_rename(partial, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            sftp.remove(partial)
        raise


@functools.lru_cache(maxsize=32)
def _empty_qcow2(argv: tuple[str, ...], virtual_size: int) -> bytes:
    """The bytes of an empty qcow2 image made by `argv`: the same for the same arguments (no time stamp or
    random id in it), so a worker makes each kind once instead of running qemu-img for every migration."""
    with tempfile.TemporaryDirectory(prefix="archq-disk-") as tmp:
        local = Path(tmp) / "empty.qcow2"
        proc = subprocess.run([*argv, str(local), str(virtual_size)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise WorkerError("target_disk_failed", proc.stderr.strip())
        return local.read_bytes()


def copy_disks(sftp: paramiko.SFTPClient, host: str, disks: tuple[Disk, ...]) -> None:
    """Cold migration: the disks themselves (the top image; backing images are artifacts)."""
    for disk in disks:
        try:
            _put_whole(sftp, disk.path, disk.path)
        except OSError as exc:
            raise WorkerError("target_disk_failed", f"cannot copy {disk.path} to {host}: {exc}") from exc
