from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import archq, json_body
from web.idempotency import idempotent
from web.schemas import ImageCreateRequest, image_out
from web.services import images

bp = Blueprint("images", __name__)


def _dump(image, counts: dict[str, int]) -> dict:
    return image_out.dump(images.image_view(image, counts.get(image.name, 0)))


@bp.post("/images")
@idempotent
def create_image():
    request = ImageCreateRequest(allowed_dirs=archq().settings.allowed_image_dirs).load(json_body())
    image = images.create_image(request)
    return jsonify({"image": _dump(image, {})}), 201, {"Location": f"/api/v1/images/{image.name}"}


@bp.get("/images")
def list_images():
    counts = images.vm_counts()
    return jsonify({"images": [_dump(image, counts) for image in images.list_images()]})


@bp.get("/images/<name>")
def get_image(name: str):
    return jsonify({"image": _dump(images.get_image(name), images.vm_counts())})


@bp.delete("/images/<name>")
def delete_image(name: str):
    images.delete_image(name)
    return "", 204
