"""`archq images build`: build (or reuse) a guest image on this hypervisor host, then put it in the catalog."""

from __future__ import annotations

import subprocess
import sys
import time

import click

from queues import logs
from queues.arch import ALL, Arch
from queues.config import Settings
from workers.guest.debian import NAME as DEBIAN_12
from workers.guest.debian import DebianImageError, ensure_debian_image, load_cached
from workers.guest.tiny import ensure_tiny_guest

BUILDERS = {DEBIAN_12: ensure_debian_image}
TINY = "tiny"


@click.command("build")
@click.argument("name", type=click.Choice(sorted([*BUILDERS, TINY])))
@click.option(
    "--arch",
    "arches",
    multiple=True,
    type=click.Choice([a.value for a in ALL]),
    help="repeatable; default: both (arm64 on x86-64 runs through qemu-user: 10-15 minutes)",
)
@click.option("--no-register", is_flag=True, help="only build; do not add it to the image catalog")
def build(name: str, arches: tuple[str, ...], no_register: bool) -> None:
    """Build image NAME from Debian's packages into the images directory (reused when already built), then
    register it in the catalog (`archq images register NAME`)."""
    settings = Settings.from_env()
    logs.configure(settings.log_format)
    if name == TINY:
        _build_tiny(settings, arches)
    else:
        _build_disk_image(settings, name, arches)
    if no_register:
        return
    # The catalog is the web side's: run its command exactly as `archq up` runs register-tiny, so this process
    # never imports the web package.
    register = ["register-tiny"] if name == TINY else ["register", name]
    proc = subprocess.run([sys.executable, "-m", "client.cli", "images", *register], check=False)
    if proc.returncode != 0:
        raise click.ClickException(
            f"{name} is built but not registered (is the database reachable?); run `archq images {' '.join(register)}`"
        )


def _build_tiny(settings: Settings, arches: tuple[str, ...]) -> None:
    for arch in arches or tuple(a.value for a in ALL):
        guest = ensure_tiny_guest(Arch(arch), settings.images_dir / TINY)
        click.echo(f"{arch}: kernel {guest.kernel} sha256 {guest.kernel_sha256}")
        click.echo(f"{arch}: initrd {guest.initrd} sha256 {guest.initrd_sha256}")
        click.echo(f"{arch}: manifest {guest.kernel.parent / 'manifest.json'}")


def _build_disk_image(settings: Settings, name: str, arches: tuple[str, ...]) -> None:
    for arch in arches or tuple(a.value for a in ALL):
        started = time.monotonic()
        cached = load_cached(Arch(arch), settings.images_dir / name / arch) is not None
        try:
            image = BUILDERS[name](Arch(arch), settings.images_dir)
        except DebianImageError as exc:
            raise click.ClickException(f"{name} {arch}: {exc}") from exc
        took = time.monotonic() - started
        manifest = image.manifest
        disk_bytes = manifest["files"]["disk.qcow2"]["bytes"]
        built = f"reused (built in {manifest['build_seconds']:.0f} s)" if cached else "built"
        click.echo(
            f"{name} {arch}: {built} (this run {took:.1f} s); {image.disk}: qcow2 {disk_bytes} bytes "
            f"({disk_bytes / 2**20:.0f} MiB), virtual size {manifest['virtual_size']} bytes "
            f"({manifest['virtual_size'] / 2**30:.0f} GiB); login user {image.login_user}"
        )
