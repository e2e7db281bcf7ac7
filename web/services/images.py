"""The image catalog: images by name, each with an artifact per architecture, and what a create uses."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from queues.arch import Arch
from queues.images import TINY, built_artifacts, native_arch, tiny_artifacts
from queues.vocabulary import VmState
from web.errors import Conflict, NotFound, Unprocessable
from web.extensions import db
from web.models import Image, Vm
from web.paging import Page, keyset_page

log = logging.getLogger(__name__)

# Every VM not deleted (even a failed one, until its delete) holds the name of its image.
_HOLDS_IMAGE = Vm.state != VmState.DELETED


def list_images() -> list[Image]:
    return list(db.session.scalars(select(Image).order_by(Image.name)))


def image_page(filters: dict, after: list[str] | None, limit: int) -> Page[Image]:
    """Images in name order, only the one named `name` if given."""
    query = select(Image)
    if "name" in filters:
        query = query.where(Image.name == filters["name"])
    return keyset_page(query, (Image.name,), after, limit)


def get_image(name: str) -> Image:
    image = db.session.get(Image, name)
    if image is None:
        raise NotFound(f"no image named {name!r}")
    return image


def vms_using(name: str) -> list[str]:
    return list(db.session.scalars(select(Vm.id).where(Vm.image == name, _HOLDS_IMAGE)))


def vm_counts() -> dict[str, int]:
    rows = db.session.execute(select(Vm.image, func.count()).where(_HOLDS_IMAGE).group_by(Vm.image))
    return {name: count for name, count in rows}


def create_image(request: dict) -> Image:
    if db.session.get(Image, request["name"]) is not None:
        raise Conflict(f"an image named {request['name']!r} already exists", code="name_taken")
    image = Image(name=request["name"], artifacts=request["artifacts"], description=request.get("description", ""))
    db.session.add(image)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise Conflict(f"an image named {request['name']!r} already exists", code="name_taken") from exc
    return image


def delete_image(name: str) -> None:
    image = get_image(name)
    users = vms_using(name)
    if users:
        raise Conflict(
            f"image {name!r} is used by {len(users)} VM(s) ({', '.join(users[:5])}{', ...' if len(users) > 5 else ''})"
            "; delete them first",
            code="image_in_use",
            fields={"vms": users},
        )
    db.session.delete(image)
    db.session.commit()


def artifact_for(name: str, arch: Arch) -> dict:
    """The artifact a create of `arch` boots from; 422 naming what exists when the image or its arch does not."""
    image = db.session.get(Image, name)
    if image is None:
        known = ", ".join(db.session.scalars(select(Image.name).order_by(Image.name))) or "none registered"
        raise Unprocessable(f"unknown image {name!r}", fields={"image": [f"unknown image {name!r}; known: {known}"]})
    artifact = image.artifacts.get(arch.value)
    if not artifact:
        has = ", ".join(sorted(a for a, v in image.artifacts.items() if v)) or "none"
        message = f"image {name!r} has no {arch} artifact; it has: {has}"
        raise Unprocessable(message, code="image_arch_unavailable", fields={"image": [message], "arch": [message]})
    return artifact


def register_tiny(images_dir: Path) -> Image | None:
    """Register (or update) `tiny` from the manifests `archq images build tiny` wrote under `images_dir/tiny`; None
    when no tiny guest is built there. An arch built later is added; a rebuilt one gets its new sha256s."""
    return _register(
        TINY,
        tiny_artifacts(Path(images_dir) / TINY),
        "busybox initramfs + Debian cloud kernel, direct kernel boot; prints its uname -m",
    )


# What `archq images build NAME` can build (workers/image_commands.py), and how the catalog describes it.
BUILT_IMAGES = {
    "debian-12": "Debian 12 (bookworm) with cloud-init (NoCloud), OpenSSH and the QEMU guest agent; "
    "direct kernel boot from its own disk; log in as `debian`",
}


def register_built(images_dir: Path, name: str) -> Image | None:
    """Register (or update) a disk image `archq images build NAME` built under `images_dir/NAME`; None when
    none is built there. Like `tiny`, an arch built later is added and a rebuilt one gets its new sha256s."""
    return _register(name, built_artifacts(images_dir, name), BUILT_IMAGES.get(name, ""))


def _register(name: str, artifacts: dict[str, dict], description: str) -> Image | None:
    if not artifacts:
        return None
    image = db.session.get(Image, name)
    if image is None:
        image = Image(name=name, artifacts={}, description="")
        db.session.add(image)
    image.artifacts = {**(image.artifacts or {}), **artifacts}
    image.description = description
    try:
        db.session.commit()
    except IntegrityError:
        # Another process registered it at the same moment; its row has the same manifests.
        db.session.rollback()
        return db.session.get(Image, name)
    log.info("image %s registered for %s", name, ", ".join(sorted(artifacts)))
    return image


def image_view(image: Image, in_use: int) -> dict:
    return {
        "name": image.name,
        "description": image.description,
        "native_arch": native_arch(image.artifacts),
        "artifacts": image.artifacts,
        "vms": in_use,
        "created_at": image.created_at,
        "updated_at": image.updated_at,
    }
