from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import archq, json_body
from web.api_schemas import ImageEnvelope
from web.idempotency import idempotent
from web.paging import filters_of, load_query, page_response
from web.schemas import ImageCreateRequest, ImageQuery, image_out
from web.services import images

bp = Blueprint("images", __name__)


def _view(image, counts: dict[str, int]) -> dict:
    return images.image_view(image, counts.get(image.name, 0))


@bp.post("/images")
@idempotent
def create_image():
    """Register an image: an artifact per architecture, each with its source and SHA-256
    ---
    post:
      description: A source is an http(s) URL or a file under one of the image directories (ARCHQ_IMAGE_DIRS).
        Nothing is fetched now; each host fetches and checks an artifact when a VM first needs it there.
      requestBody: {required: true, content: {application/json: {schema: ImageCreateRequest}}}
      responses:
        201:
          description: the image; Location names it
          headers: {Location: {schema: {type: string}, description: /api/v1/images/<name>}}
          content: {application/json: {schema: ImageEnvelope}}
        409: Error
    """
    request = ImageCreateRequest(allowed_dirs=archq().settings.allowed_image_dirs).load(json_body())
    image = images.create_image(request)
    body = ImageEnvelope().dump({"image": _view(image, {})})
    return jsonify(body), 201, {"Location": f"/api/v1/images/{image.name}"}


@bp.get("/images")
def list_images():
    """List images with the number of VMs using each, in name order, a page at a time: follow `next` until it is
    null
    ---
    get:
      parameters:
        - {in: query, schema: ImageQuery}
      responses:
        200:
          description: a page of images
          content: {application/json: {schema: ImageListOut}}
          headers: {Link: NextLink}
    """
    query = load_query(ImageQuery())
    page = images.image_page(filters_of(query), query["next"], query["limit"])
    counts = images.vm_counts()
    return page_response("images", [image_out.dump(_view(image, counts)) for image in page.rows], page)


@bp.get("/images/<name>")
def get_image(name: str):
    """One image
    ---
    get:
      responses:
        200: {description: the image, content: {application/json: {schema: ImageEnvelope}}}
    """
    return jsonify(ImageEnvelope().dump({"image": _view(images.get_image(name), images.vm_counts())}))


@bp.delete("/images/<name>")
def delete_image(name: str):
    """Remove an image from the catalog (refused while a VM uses it); hosts' stored artifacts stay
    ---
    delete:
      responses:
        204: {description: removed}
        409: Error
    """
    images.delete_image(name)
    return "", 204
