"""`archq vm|job|host|images|project|system ...`: the HTTP API from a shell. Every command takes `--url`,
`--token`, `--context` (client/config.py says where each comes from otherwise), `--project` (an admin acting for
that project), `-o table|json|yaml|name` and `-c COLUMN`, before the subcommand (`archq -o json vm list`) or
after it."""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import click

from client.config import DEFAULT_URL, resolve
from client.http import ApiClient, ClientError, segment
from client.output import CLIENT_OPTIONS, OUTPUTS, emit, fields_of, job_display, select_columns, table
from queues import attestation
from queues.config import Settings
from queues.vocabulary import TERMINAL_JOB_STATES, JobKind, JobState

VM_COLUMNS = ("id", "name", "arch", "state", "host", "accel", "emulated", "vcpus", "memory_mib", "image", "ipv4")
JOB_COLUMNS = ("id", "kind", "state", "queue", "host", "vm_id", "created_at")
HOST_COLUMNS = ("name", "arch", "accel", "state", "emulators", "last_seen")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def api_command(fn: Callable) -> Callable:
    """Adds the client options (their values given before the subcommand count too); passes `api` (an
    ApiClient) and `output`; turns API errors into a message and exit status 1."""

    @click.option("--column", "-c", "columns", multiple=True, help="only this column or field (repeatable)")
    @click.option("--output", "-o", type=click.Choice(OUTPUTS), help="table (default), json, yaml or name")
    @click.option("--context", help="a context of the config file (env ARCHQ_CONTEXT)")
    @click.option("--token", help="bearer token (env ARCHQ_TOKEN)")
    @click.option("--url", help=f"API (env ARCHQ_URL, default {DEFAULT_URL})")
    @click.option(
        "--project", "acting_for", help="admin: act for this project (only its VMs and jobs; new ones go to it)"
    )
    @functools.wraps(fn)
    def wrapper(
        url: str | None,
        token: str | None,
        context: str | None,
        output: str | None,
        columns,
        acting_for: str | None,
        **kwargs,
    ):
        given = client_options(click.get_current_context())
        endpoint = resolve(url or given.get("url"), token or given.get("token"), context or given.get("context"))
        select_columns(columns or given.get("columns") or ())
        api = ApiClient(endpoint.url, endpoint.token, project=acting_for or given.get("project"))
        try:
            return fn(api, output or given.get("output") or "table", **kwargs)
        except ClientError as exc:
            hint = f"\nhint: the API refused the token from {endpoint.source}" if exc.status == 401 else ""
            raise click.ClickException(str(exc) + hint) from None

    return wrapper


def complete(collection: str, incomplete: str) -> list[str]:
    """Names of VMs or hosts for shell completion (`_ARCHQ_COMPLETE=bash_source archq`), from the API the
    client would use; nothing when it cannot be reached (completion must never print an error)."""
    ctx = click.get_current_context(silent=True)
    given = client_options(ctx) if ctx else {}
    try:
        endpoint = resolve(given.get("url"), given.get("token"), given.get("context"))
        rows = list(ApiClient(endpoint.url, endpoint.token, timeout=3).items(f"/{collection}", collection))
    except (ClientError, click.ClickException):
        return []
    return sorted(row["name"] for row in rows if row.get("name", "").startswith(incomplete))


def vm_argument(fn: Callable) -> Callable:
    """The VM a command acts on, by id or name; the shell completes names."""
    return click.argument("vm_ref", metavar="VM", shell_complete=lambda _c, _p, text: complete("vms", text))(fn)


def host_argument(fn: Callable) -> Callable:
    """The host a command acts on; the shell completes names."""
    return click.argument("name", shell_complete=lambda _c, _p, text: complete("hosts", text))(fn)


def client_options(ctx: click.Context) -> dict:
    """The client options given before the subcommand (`archq -o json vm list`): the root command's."""
    return ctx.find_root().meta.get(CLIENT_OPTIONS, {})


def resolve_vm(api: ApiClient, id_or_name: str) -> str:
    """A VM id from an id or a (unique) name."""
    if _UUID.match(id_or_name):
        return id_or_name
    matches = [vm["id"] for vm in api.items("/vms", "vms", name=id_or_name)]
    if len(matches) != 1:
        found = "no VM" if not matches else f"{len(matches)} VMs"
        # An admin sees every project's VMs: one name may be taken in several.
        hint = "give its id" if not matches else "give its id, or --project to look in one project"
        raise click.ClickException(f"{found} named {id_or_name!r}; {hint}")
    return matches[0]


def progress_text(job: dict) -> str:
    text = f"job {job['id']} {job['kind']}: {job['state']}"
    progress = job.get("progress") or {}
    if progress.get("percent") is not None:
        text += f" {progress['percent']:.0f}%"
    if progress.get("bytes_remaining") is not None:
        text += f", {progress['bytes_remaining'] / 2**20:.1f} MiB remaining"
    return text


# A job is polled soon after it is submitted, then less and less often, up to every POLL_MAX_S: a short job (a
# small VM's live migration takes about a second) is seen done tens of ms after it ends instead of up to half a
# second later, and a long one asks the API no more often than before.
POLL_FIRST_S = 0.05
POLL_MAX_S = 0.5


def poll_delays() -> Iterator[float]:
    delay = POLL_FIRST_S
    while True:
        yield delay
        delay = min(delay * 1.5, POLL_MAX_S)


def wait_for_job(api: ApiClient, job_id: str, timeout: float) -> dict:
    """Polls the job until it ends, showing its state and progress: a progress bar on a terminal, else a new
    line per change; the job at the end."""
    deadline = time.monotonic() + timeout
    delays = poll_delays()
    with job_display(sys.stdout.isatty()) as show:
        while True:
            job = api.get(f"/jobs/{segment(job_id)}")["job"]
            show(job, progress_text(job))
            if job["state"] in TERMINAL_JOB_STATES:
                return job
            if time.monotonic() > deadline:
                raise click.ClickException(f"job {job_id} is still {job['state']} after {timeout:g} s")
            time.sleep(next(delays))


def finish(api: ApiClient, output: str, answer: dict, wait: bool, timeout: float) -> dict:
    """Prints an accepted job (202 answers) and, with --wait, waits for it; exits 1 unless it succeeded. Returns
    the job as last seen."""
    job = answer["job"]
    if not wait:
        emit(output, answer, f"job {job['id']} {job['kind']} accepted on queue {job['queue'] or '-'}")
        return job
    if output == "table":
        click.echo(f"job {job['id']} {job['kind']} accepted on queue {job['queue'] or '-'}")
    job = wait_for_job(api, job["id"], timeout) if output == "table" else _quiet_wait(api, job, timeout)
    end_job(output, job)
    return job


def _quiet_wait(api: ApiClient, job: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    delays = poll_delays()
    while job["state"] not in TERMINAL_JOB_STATES and time.monotonic() < deadline:
        time.sleep(next(delays))
        job = api.get(f"/jobs/{segment(job['id'])}")["job"]
    return job


def end_job(output: str, job: dict) -> None:
    if output != "table":
        emit(output, {"job": job}, "")
    elif job.get("error"):
        click.echo(f"error: {job['error']['code']}: {job['error']['message']}", err=True)
    if job["state"] != JobState.SUCCEEDED:
        sys.exit(1)


wait_options = [
    click.option("--wait", is_flag=True, help="wait for the job to end; exit 1 unless it succeeded"),
    click.option("--timeout", default=600.0, show_default=True, help="seconds --wait waits"),
]


def with_wait(fn: Callable) -> Callable:
    for option in reversed(wait_options):
        fn = option(fn)
    return fn


# --- vm ----------------------------------------------------------------------------------------------------


@click.group()
def vm() -> None:
    """Virtual machines: create, list, show, delete, start, stop, reboot, snapshots, migrate."""


@vm.command("create")
@click.argument("name")
@click.option("--arch", required=True, help="amd64 or arm64 (aliases: x86_64, aarch64)")
@click.option("--vcpus", type=int, default=1, show_default=True)
@click.option("--memory-mib", type=int, default=128, show_default=True)
@click.option("--image", default="tiny", show_default=True)
@click.option("--emulation", type=click.Choice(["prefer_native", "native_only", "allow"]))
@click.option("--placement", type=click.Choice(["queue", "least_loaded", "best_fit", "round_robin", "random"]))
@click.option("--host", help="pin the VM to this host")
@click.option("--cpu-mode")
@click.option("--restart-policy", type=click.Choice(["always", "on-failure", "never"]))
@click.option("--network", type=click.Choice(["nat", "bridge", "none"]), help="default nat")
@click.option("--bridge", help="the host bridge to join (with --network bridge)")
@click.option(
    "--ssh-key",
    "ssh_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="an OpenSSH public key file (.pub) for the image's default user; repeatable",
)
@click.option("--user-data", type=click.File("r"), help="a #cloud-config or #! script file for cloud-init")
@click.option("--hostname", help="the guest's hostname (default: NAME)")
@click.option("--disk-gib", type=int, help="the VM's disk size (at least the image's)")
@click.option("--count", type=int, help="create this many VMs, NAME-1 to NAME-COUNT: all of them or none")
@click.option("--spread", is_flag=True, default=None, help="with --count, each VM on a different host")
@with_wait
@api_command
def vm_create(
    api: ApiClient,
    output: str,
    name: str,
    wait: bool,
    timeout: float,
    network: str | None,
    bridge: str | None,
    ssh_keys: tuple[str, ...],
    user_data: TextIO | None,
    **options,
) -> None:
    """Create a VM NAME."""
    body = {"name": name, **{k: v for k, v in options.items() if v is not None}}
    if network or bridge:
        body["network"] = {"mode": network or "bridge", **({"bridge": bridge} if bridge else {})}
    if ssh_keys:
        body["ssh_authorized_keys"] = [line for path in ssh_keys for line in _public_keys(Path(path))]
    if user_data is not None:
        body["user_data"] = user_data.read()
    answer = api.post("/vms", body)
    if "vms" in answer:
        finish_bulk(api, output, answer, wait, timeout)
        return
    if output == "table":
        click.echo(f"vm {answer['vm']['id']} {name}")
        if answer["vm"].get("emulation_warning"):
            click.echo(f"warning: {answer['vm']['emulation_warning']}", err=True)
    finish(api, output, answer, wait, timeout)


def finish_bulk(api: ApiClient, output: str, answer: dict, wait: bool, timeout: float) -> None:
    """Prints a bulk create's VMs and jobs and, with --wait, waits for every job; exits 1 unless all succeeded."""
    if output == "table":
        for vm, job in zip(answer["vms"], answer["jobs"], strict=True):
            click.echo(f"vm {vm['id']} {vm['name']} job {job['id']} on queue {job['queue'] or '-'}")
    if not wait:
        if output != "table":
            emit(output, answer, "")
        return
    deadline = time.monotonic() + timeout
    jobs = [_quiet_wait(api, job, max(0.0, deadline - time.monotonic())) for job in answer["jobs"]]
    if output != "table":
        emit(output, {"jobs": jobs}, "")
    failed = [job for job in jobs if job["state"] != JobState.SUCCEEDED]
    for job in failed:
        error = job.get("error") or {}
        click.echo(
            f"error: job {job['id']} {job['state']}: {error.get('code', '')} {error.get('message', '')}", err=True
        )
    if output == "table":
        click.echo(f"{len(jobs) - len(failed)} of {len(jobs)} succeeded")
    if failed:
        sys.exit(1)


def _public_keys(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise click.BadParameter(f"{path} holds no public key", param_hint="--ssh-key")
    return lines


@vm.command("list")
@click.option("--arch", help="only VMs of this architecture")
@click.option("--state", help="only VMs in this state")
@click.option("--host", help="only VMs on this host")
@api_command
def vm_list(api: ApiClient, output: str, arch: str | None, state: str | None, host: str | None) -> None:
    """List VMs, oldest first."""
    answer = api.every("/vms", "vms", arch=arch, state=state, host=host)
    rows = [{**vm, "ipv4": [a["ipv4"] for a in vm.get("addresses") or [] if a.get("ipv4")]} for vm in answer["vms"]]
    emit(output, answer, table(rows, VM_COLUMNS))


@vm.command("show")
@vm_argument
@api_command
def vm_show(api: ApiClient, output: str, vm_ref: str) -> None:
    """Show VM (an id or a name)."""
    answer = api.get(f"/vms/{segment(resolve_vm(api, vm_ref))}")
    emit(output, answer, fields_of(answer["vm"]))


@vm.command("console")
@vm_argument
@click.option("--force", is_flag=True, help="take the console over from the session that holds it")
@api_command
def vm_console(api: ApiClient, output: str, vm_ref: str, force: bool) -> None:
    """Attach to VM's serial console (operator): keys go to the guest, Ctrl-] leaves."""
    from client import console

    vm_id = resolve_vm(api, vm_ref)
    try:
        ws, opened = console.connect(api.base, api.token, vm_id, force)
    except console.ConsoleRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Connected to {vm_ref} on host {opened['host']}. Escape character is ^] (Ctrl-]).", err=True)
    why = console.interact(ws, sys.stdin.fileno())
    click.echo(f"\r\nConsole session ended: {why}", err=True)


@vm.command("delete")
@vm_argument
@with_wait
@api_command
def vm_delete(api: ApiClient, output: str, vm_ref: str, wait: bool, timeout: float) -> None:
    """Delete VM: destroys its domain and removes its files."""
    finish(api, output, api.delete(f"/vms/{segment(resolve_vm(api, vm_ref))}"), wait, timeout)


def _action(action: str, doc: str) -> click.Command:
    @vm_argument
    @with_wait
    @api_command
    def command(api: ApiClient, output: str, vm_ref: str, wait: bool, timeout: float) -> None:
        finish(api, output, api.post(f"/vms/{segment(resolve_vm(api, vm_ref))}/{action}"), wait, timeout)

    command.__doc__ = doc
    return vm.command(action)(command)


vm_start = _action(JobKind.START, "Start VM.")
vm_stop = _action(JobKind.STOP, "Stop VM (ACPI shutdown, forced after the stop timeout).")
vm_reboot = _action(JobKind.REBOOT, "Reboot VM.")


@vm.group("snapshot")
def snapshot() -> None:
    """Snapshots of a VM: create, list, revert, delete."""


@snapshot.command("create")
@vm_argument
@click.argument("name")
@click.option("--memory/--no-memory", default=False, show_default=True, help="include the guest's memory")
@with_wait
@api_command
def snapshot_create(
    api: ApiClient, output: str, vm_ref: str, name: str, memory: bool, wait: bool, timeout: float
) -> None:
    """Snapshot VM as NAME."""
    answer = api.post(f"/vms/{segment(resolve_vm(api, vm_ref))}/snapshots", {"name": name, "memory": memory})
    finish(api, output, answer, wait, timeout)


@snapshot.command("list")
@vm_argument
@api_command
def snapshot_list(api: ApiClient, output: str, vm_ref: str) -> None:
    """List VM's snapshots."""
    answer = api.every(f"/vms/{segment(resolve_vm(api, vm_ref))}/snapshots", "snapshots")
    rows = answer.get("snapshots", [])
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["name"]
    emit(output, answer, table(rows, columns))


@snapshot.command("revert")
@vm_argument
@click.argument("name")
@with_wait
@api_command
def snapshot_revert(api: ApiClient, output: str, vm_ref: str, name: str, wait: bool, timeout: float) -> None:
    """Revert VM to snapshot NAME."""
    path = f"/vms/{segment(resolve_vm(api, vm_ref))}/snapshots/{segment(name)}/revert"
    finish(api, output, api.post(path), wait, timeout)


@snapshot.command("delete")
@vm_argument
@click.argument("name")
@with_wait
@api_command
def snapshot_delete(api: ApiClient, output: str, vm_ref: str, name: str, wait: bool, timeout: float) -> None:
    """Delete VM's snapshot NAME."""
    finish(api, output, api.delete(f"/vms/{segment(resolve_vm(api, vm_ref))}/snapshots/{segment(name)}"),
           wait, timeout)  # fmt: skip


@vm.group("attest")
def attest() -> None:
    """Signed records of a VM's operations: verify them (and export them) offline."""


@attest.command("verify")
@click.argument("vm_ref", metavar="[VM]", required=False, shell_complete=lambda _c, _p, text: complete("vms", text))
@click.option("--export", "export_to", type=click.Path(dir_okay=False, writable=True), help="also write the chain here")
@click.option("--file", "from_file", type=click.File("r"), help="verify a chain exported before (no API needed)")
@api_command
def attest_verify(api: ApiClient, output: str, vm_ref: str | None, export_to: str | None, from_file: TextIO | None):
    """Verify every signature and link of VM's attestation chain; exit 1 on any problem, each named."""
    if (vm_ref is None) == (from_file is None):
        raise click.UsageError("give a VM or --file, not both")
    if from_file is not None:
        chain = json.load(from_file)
    else:
        chain = api.get(f"/vms/{segment(resolve_vm(api, vm_ref))}/attestations")
    if export_to:
        Path(export_to).write_text(json.dumps(chain, indent=2, sort_keys=True) + "\n")
    problems = attestation.verify_chain(chain["vm_id"], chain["records"], chain["keys"])
    signers = sorted({(r["payload"].get("host"), r["payload"].get("key")) for r in chain["records"]}, key=str)
    unattested = chain.get("unattested_jobs") or []
    answer = {
        "vm_id": chain["vm_id"],
        "records": len(chain["records"]),
        "verified": not problems,
        "problems": [str(p) for p in problems],
        "signers": [{"host": h, "fingerprint": attestation.fingerprint(k)} for h, k in signers if isinstance(k, str)],
        "unattested_jobs": unattested,
    }
    keys = ", ".join(f"{s['host']} {s['fingerprint']}" for s in answer["signers"]) or "nobody"
    verdict = "chain NOT verified" if problems else "chain verified"
    if unattested:
        verdict += f"; {len(unattested)} succeeded job(s) have no record: {', '.join(unattested)}"
    head = f"VM {chain['vm_id']}: {len(chain['records'])} record(s) signed by {keys}"
    text = "\n".join([head, *answer["problems"], verdict])
    emit(output, answer, text)
    if problems:
        sys.exit(1)


@vm.command("migrate")
@vm_argument
@click.option("--target-host", help="where to (default: archq picks a host)")
@click.option("--live/--offline", default=True, show_default=True)
@with_wait
@api_command
def vm_migrate(
    api: ApiClient, output: str, vm_ref: str, target_host: str | None, live: bool, wait: bool, timeout: float
) -> None:
    """Migrate VM to another host."""
    body: dict = {"live": live}
    if target_host:
        body["target_host"] = target_host
    migration = finish(api, output, api.post(f"/vms/{segment(resolve_vm(api, vm_ref))}/migrate", body), wait, timeout)
    if wait:
        # The target signs the arrival in a job of its own, the VM busy until it ends: waiting for it too lets the
        # next command act on the VM. The migration did succeed, so a failed signature only warns.
        arrival = wait_for_arrival(api, migration, timeout)
        if arrival is not None and arrival["state"] != JobState.SUCCEEDED:
            click.echo(f"warning: {arrival['host']} did not sign the arrival (job {arrival['id']}: "
                       f"{arrival['state']}); the VM's attestation chain lacks it", err=True)  # fmt: skip


def wait_for_arrival(api: ApiClient, migration: dict, timeout: float) -> dict | None:
    """The `migrate_in` job the conductor made when `migration` succeeded, once it ended (None: there is none)."""
    for job in api.items("/jobs", "jobs", most=1, vm_id=migration["vm_id"], kind=JobKind.MIGRATE_IN):
        if job["created_at"] >= migration["created_at"]:
            return _quiet_wait(api, job, timeout)
    return None


class SshFailure(click.ClickException):
    def __init__(self, message: str) -> None:
        from client.ssh import NO_STATUS

        super().__init__(message)
        # 255, as ssh: the remote command's own statuses (1, 2, ...) pass through and must stay distinguishable.
        self.exit_code = NO_STATUS


@vm.command("ssh")
@vm_argument
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "-i",
    "identities",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="KEY",
    help="a private key to log in with (repeatable); default: ssh-agent's keys and ~/.ssh/id_*",
)
@click.option("-l", "login", metavar="USER", help="the guest user (default: the image's login user)")
@click.option("-p", "port", type=click.IntRange(1, 65535), default=22, show_default=True, help="the guest's SSH port")
@click.option(
    "--jump/--no-jump",
    default=None,
    help="only through the VM's host / only directly (default: directly if it answers, else the host)",
)
@click.option("--jump-user", help="user on the host (default: ARCHQ_SSH_USER, root)")
@click.option(
    "--jump-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="key for the host (default: ARCHQ_SSH_KEY, $ARCHQ_DATA_DIR/ssh/id_ed25519)",
)
@click.option(
    "--direct-timeout",
    type=float,
    default=2.0,
    show_default=True,
    help="seconds to wait for the guest's port before going through the host",
)
@api_command
def vm_ssh(
    api: ApiClient,
    output: str,
    vm_ref: str,
    command: tuple[str, ...],
    identities: tuple[Path, ...],
    login: str | None,
    port: int,
    jump: bool | None,
    jump_user: str | None,
    jump_key: Path | None,
    direct_timeout: float,
) -> None:
    """Log in to VM's guest over SSH, or run COMMAND there (after `--`; its exit status is ours).

    The guest must prove one of the host keys archq read from its console, the host it is reached through one
    recorded in ARCHQ_KNOWN_HOSTS (`archq host trust`). Exit status 255: the SSH connection failed."""
    # paramiko takes longer to import than every other client command needs to run: only here.
    from client import ssh

    vm = api.get(f"/vms/{segment(resolve_vm(api, vm_ref))}")["vm"]
    host = None
    if vm.get("host") and jump is not False:
        # Only needed to jump: the guest may well answer directly, and if not the plan says why there is no jump.
        with contextlib.suppress(ClientError):
            host = api.get(f"/hosts/{segment(vm['host'])}")["host"]
    settings = Settings.from_env()
    # A passphrase is asked only on a terminal, and getpass reads it from there without echo.
    ask = getpass.getpass if sys.stdin.isatty() else None
    try:
        target = ssh.plan_connection(
            vm, host, user=login, port=port, jump_user=jump_user or settings.ssh_user,
            jump_key=jump_key or settings.ssh_key_file, known_hosts=settings.known_hosts_file,
        )  # fmt: skip
        keys = ssh.login_keys(identities, ask)
        with ssh.open_session(target, keys, jump=jump, direct_timeout=direct_timeout, ask=ask) as session:
            if not command and sys.stdin.isatty() and sys.stdout.isatty():
                status = ssh.interactive_shell(session, sys.stdin.fileno(), sys.stdout.fileno())
            else:
                # Joined with spaces, as ssh does: the guest's shell parses the line.
                line = " ".join(command) if command else None
                status = ssh.run(session, line, sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer)
    except ssh.VmSshError as exc:
        raise SshFailure(str(exc)) from None
    sys.exit(status)


# --- job ---------------------------------------------------------------------------------------------------


@click.group()
def job() -> None:
    """Jobs: show, list, cancel, wait."""


@job.command("show")
@click.argument("job_id")
@api_command
def job_show(api: ApiClient, output: str, job_id: str) -> None:
    """Show a job and its events."""
    answer = api.get(f"/jobs/{segment(job_id)}")
    item = answer["job"]
    events = "\n".join(f"  {e['at']}  {e['state']:<9}  {e['actor']:<20}  {e['message']}" for e in item["events"])
    emit(output, answer, fields_of(item) + ("\nevents:\n" + events if events else ""))


@job.command("list")
@click.option("--state")
@click.option("--kind")
@click.option("--vm", "vm_ref", metavar="VM", help="only this VM's jobs (id or name)")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="show at most this many")
@api_command
def job_list(api: ApiClient, output: str, state: str | None, kind: str | None, vm_ref: str | None, limit: int) -> None:
    """List jobs, newest first."""
    vm_id = resolve_vm(api, vm_ref) if vm_ref else None
    # Pages of `limit`: the newest `limit` jobs come in one request.
    answer = api.every("/jobs", "jobs", most=limit, state=state, kind=kind, vm_id=vm_id, limit=min(limit, 1000))
    emit(output, answer, table(answer["jobs"], JOB_COLUMNS))


@job.command("cancel")
@click.argument("job_id")
@api_command
def job_cancel(api: ApiClient, output: str, job_id: str) -> None:
    """Cancel a job."""
    answer = api.post(f"/jobs/{segment(job_id)}/cancel")
    emit(output, answer, f"job {job_id}: {answer['job']['state']}")


@job.command("wait")
@click.argument("job_id")
@click.option("--timeout", default=3600.0, show_default=True, help="seconds to wait")
@api_command
def job_wait(api: ApiClient, output: str, job_id: str, timeout: float) -> None:
    """Wait for a job to end, showing its progress; exit 1 unless it succeeded."""
    if output != "table":
        end_job(output, _quiet_wait(api, api.get(f"/jobs/{segment(job_id)}")["job"], timeout))
    else:
        end_job(output, wait_for_job(api, job_id, timeout))


# --- host and image ----------------------------------------------------------------------------------------


@click.command("list")
@click.option("--arch", help="only hosts of this architecture")
@click.option("--state", type=click.Choice(["up", "drained", "down"]), help="only hosts in this state")
@api_command
def host_list(api: ApiClient, output: str, arch: str | None, state: str | None) -> None:
    """List hypervisor hosts."""
    answer = api.every("/hosts", "hosts", arch=arch, state=state)
    emit(output, answer, table(answer["hosts"], HOST_COLUMNS))


@click.command("show")
@host_argument
@api_command
def host_show(api: ApiClient, output: str, name: str) -> None:
    """Show a host."""
    answer = api.get(f"/hosts/{segment(name)}")
    emit(output, answer, fields_of(answer["host"]))


def _host_action(action: str, doc: str) -> click.Command:
    @click.command(action, help=doc)
    @host_argument
    @api_command
    def command(api: ApiClient, output: str, name: str) -> None:
        answer = api.post(f"/hosts/{segment(name)}/{action}")
        emit(output, answer, f"host {name} {action}ed")

    return command


@click.command("trust-key")
@host_argument
@click.option("--fingerprint", help="the fingerprint you checked on the host (`archq worker --check` there)")
@click.option("--yes", is_flag=True, help="do not ask (with --fingerprint)")
@api_command
def host_trust_key(api: ApiClient, output: str, name: str, fingerprint: str | None, yes: bool) -> None:
    """Accept the changed attestation signing key host NAME offers (admin)."""
    keys = api.get(f"/hosts/{segment(name)}")["host"].get("signing_key") or {}
    offered = keys.get("offered")
    if not offered:
        raise click.ClickException(f"host {name} offers no new signing key (pinned: {keys.get('fingerprint')})")
    if fingerprint and fingerprint != offered:
        raise click.ClickException(f"host {name} offers {offered}, not {fingerprint}: do not trust it")
    if not (fingerprint and yes):
        click.echo(f"host {name}: pinned key {keys.get('fingerprint')}, now offers {offered}")
        click.confirm("Does the host show this fingerprint (`archq worker --check`), and trust it?", abort=True)
    answer = api.post(f"/hosts/{segment(name)}/trust-key", {"fingerprint": offered})
    emit(output, answer, f"host {name}: signing key {offered} trusted")


host_drain = _host_action("drain", "Stop placing new VMs on host NAME; its VMs stay.")
host_undrain = _host_action("undrain", "Place new VMs on host NAME again.")


@click.command("list")
@api_command
def image_list(api: ApiClient, output: str) -> None:
    """List images."""
    answer = api.every("/images", "images")
    rows = answer.get("images", [])
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["name"]
    emit(output, answer, table(rows, columns))


@click.command("show")
@click.argument("name")
@api_command
def image_show(api: ApiClient, output: str, name: str) -> None:
    """Show image NAME and its artifacts per architecture."""
    answer = api.get(f"/images/{segment(name)}")
    emit(output, answer, fields_of(answer["image"]))


@click.command("delete")
@click.argument("name")
@api_command
def image_delete(api: ApiClient, output: str, name: str) -> None:
    """Delete image NAME from the catalog (its VMs keep their disks)."""
    answer = api.delete(f"/images/{segment(name)}")
    emit(output, answer, f"image {name} deleted")


@click.command("add")
@click.argument("name")
@click.option("--arch", required=True, type=click.Choice(["amd64", "arm64"]), help="the guest architecture")
@click.option("--format", "image_format", type=click.Choice(["qcow2", "raw"]), default="qcow2", show_default=True)
@click.option("--source", required=True, help="an http(s) URL or a file under ARCHQ_IMAGE_DIRS")
@click.option("--sha256", required=True, help="the image's SHA-256")
@click.option("--description", default="", help="shown in `archq image list`")
@api_command
def image_add(
    api: ApiClient, output: str, name: str, arch: str, image_format: str, source: str, sha256: str, description: str
) -> None:
    """Add disk image NAME for one architecture to the catalog (POST /images)."""
    artifact = {"format": image_format, "source": source, "sha256": sha256}
    answer = api.post("/images", {"name": name, "description": description, "artifacts": {arch: artifact}})
    emit(output, answer, f"image {name} added for {arch}")


# --- project -----------------------------------------------------------------------------------------------

PROJECT_COLUMNS = ("name", "vms", "vcpus", "memory_mib", "emulated")


@click.group()
def project() -> None:
    """Projects and their quotas."""


class _Limit(click.ParamType):
    """A quota limit: a number, or `none` for no limit."""

    name = "N|none"

    def convert(self, value, param, ctx):
        if value is None or value == "none" or isinstance(value, int):
            return None if value == "none" else value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor `none`", param, ctx)
        if number < 0:
            self.fail("must be 0 or more", param, ctx)
        return number


def _quota_options(fn: Callable) -> Callable:
    """--vms/--vcpus/--memory-mib/--emulated."""
    for option, resource in reversed(
        [("--vms", "live VMs"), ("--vcpus", "vCPUs"), ("--memory-mib", "MiB of memory"), ("--emulated", "emulated VMs")]
    ):
        fn = click.option(option, type=_Limit(), help=f"at most this many {resource} (none: no limit)")(fn)
    return fn


def _limits(given: dict) -> dict:
    """The limits given on the command line (`none` as null), keyed by the API's names."""
    limits = {}
    for resource in ("vms", "vcpus", "memory_mib", "emulated"):
        source = click.get_current_context().get_parameter_source(resource)
        if source == click.core.ParameterSource.COMMANDLINE:
            limits[resource] = given[resource]
    return limits


def _usage_text(usage: dict) -> str:
    rows = [
        {"resource": r, "limit": usage["limits"][r], "used": usage["used"][r], "remaining": usage["remaining"][r]}
        for r in usage["limits"]
    ]
    for row in rows:
        row["limit"] = "-" if row["limit"] is None else row["limit"]
        row["remaining"] = "-" if row["remaining"] is None else row["remaining"]
    return f"project {usage['project']}\n" + table(rows, ("resource", "limit", "used", "remaining"))


@project.command("create")
@click.argument("name")
@_quota_options
@api_command
def project_create(api: ApiClient, output: str, name: str, **limits) -> None:
    """Create project NAME, with limits or none (`archq token create --project NAME` gives it a token)."""
    answer = api.post("/projects", {"name": name, "quota": _limits(limits)})
    emit(output, answer, _usage_text(answer["project"]["usage"]))


@project.command("list")
@api_command
def project_list(api: ApiClient, output: str) -> None:
    """List projects and what they use (a non-admin sees its own)."""
    answer = api.get("/projects")
    rows = [
        {"name": p["name"], **{r: f"{used}/{'-' if limit is None else limit}" for r, used, limit in _figures(p)}}
        for p in answer["projects"]
    ]
    emit(output, answer, table(rows, PROJECT_COLUMNS))


def _figures(project_row: dict) -> list[tuple[str, int, int | None]]:
    usage = project_row["usage"]
    return [(r, usage["used"][r], usage["limits"][r]) for r in usage["limits"]]


@project.command("show")
@click.argument("name")
@api_command
def project_show(api: ApiClient, output: str, name: str) -> None:
    """Show project NAME's quota: limits, used and remaining."""
    answer = api.get(f"/projects/{segment(name)}/usage")
    emit(output, answer, _usage_text(answer["usage"]))


@project.command("set-quota")
@click.argument("name")
@_quota_options
@api_command
def project_set_quota(api: ApiClient, output: str, name: str, **limits) -> None:
    """Set project NAME's limits: those given change (`none`: no limit), the others stay."""
    given = _limits(limits)
    if not given:
        raise click.UsageError("give at least one of --vms, --vcpus, --memory-mib, --emulated")
    answer = api.patch(f"/projects/{segment(name)}/quota", given)
    emit(output, answer, _usage_text(answer["project"]["usage"]))


# --- system ------------------------------------------------------------------------------------------------


@click.group()
def system() -> None:
    """The control plane."""


@system.command("info")
@api_command
def system_info(api: ApiClient, output: str) -> None:
    """The API's version and architecture, the broker, live workers and queue depths."""
    answer = api.get("/system/info")
    emit(output, answer, fields_of(answer))
