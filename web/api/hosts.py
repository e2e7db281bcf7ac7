from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import archq, json_body
from web.api_schemas import TrustKeyRequest
from web.idempotency import idempotent
from web.paging import filters_of, load_query, page_response
from web.schemas import HostQuery, host_out
from web.services import attestations, hosts
from web.services.hosts import host_view, host_views

bp = Blueprint("hosts", __name__)


@bp.get("/hosts")
def list_hosts():
    """List hypervisor hosts with their state (up, down, drained), capacity and allocation, in name order, a page
    at a time: follow `next` until it is null
    ---
    get:
      parameters:
        - {in: query, schema: HostQuery}
      responses:
        200:
          description: a page of hosts
          content: {application/json: {schema: HostListOut}}
          headers: {Link: NextLink}
    """
    settings = archq().settings
    query = load_query(HostQuery())
    page = hosts.host_page(filters_of(query), query["next"], query["limit"], settings)
    return page_response("hosts", host_out.dump(host_views(page.rows, settings), many=True), page)


@bp.get("/hosts/<name>")
def get_host(name: str):
    """One host, with the domains archq does not manage
    ---
    get:
      responses:
        200: {description: the host, content: {application/json: {schema: HostEnvelope}}}
    """
    return jsonify({"host": host_out.dump(host_view(hosts.get_host(name), archq().settings))})


@bp.post("/hosts/<name>/drain")
@idempotent
def drain(name: str):
    """Stop new placements on a host; its VMs stay
    ---
    post:
      operationId: drainHost
      responses:
        200: {description: the host, content: {application/json: {schema: HostEnvelope}}}
    """
    return jsonify({"host": host_out.dump(host_view(hosts.set_drained(name, True), archq().settings))})


@bp.post("/hosts/<name>/undrain")
@idempotent
def undrain(name: str):
    """Allow placements on a drained host again
    ---
    post:
      operationId: undrainHost
      responses:
        200: {description: the host, content: {application/json: {schema: HostEnvelope}}}
    """
    return jsonify({"host": host_out.dump(host_view(hosts.set_drained(name, False), archq().settings))})


@bp.post("/hosts/<name>/trust-key")
@idempotent
def trust_key(name: str):
    """Accept the new attestation signing key a host offers (its pinned key changed), after checking its
    fingerprint on the host
    ---
    post:
      requestBody: {required: true, content: {application/json: {schema: TrustKeyRequest}}}
      responses:
        200: {description: the host, content: {application/json: {schema: HostEnvelope}}}
        409: Error
    """
    fingerprint = TrustKeyRequest().load(json_body())["fingerprint"]
    return jsonify({"host": host_out.dump(host_view(attestations.trust_key(name, fingerprint), archq().settings))})
