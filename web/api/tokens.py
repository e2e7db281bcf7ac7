from __future__ import annotations

from flask import Blueprint, jsonify

from web.api import json_body
from web.api_schemas import TokenCreatedOut, TokenCreateRequest, TokenEnvelope, TokenListOut, TokenOut
from web.services import tokens

bp = Blueprint("tokens", __name__)
token_out = TokenOut()


@bp.get("/tokens")
def list_tokens():
    """List active tokens (never their secrets)
    ---
    get:
      responses:
        200: {description: the tokens, content: {application/json: {schema: TokenListOut}}}
    """
    return jsonify(TokenListOut().dump({"tokens": tokens.list_tokens()}))


@bp.post("/tokens")
def create_token():
    """Create a token; its secret is in this answer only
    ---
    post:
      requestBody: {required: true, content: {application/json: {schema: TokenCreateRequest}}}
      responses:
        201: {description: the token and its secret, content: {application/json: {schema: TokenCreatedOut}}}
        409: Error
        422: Error
    """
    request = TokenCreateRequest().load(json_body())
    token, secret = tokens.create_token(request["name"], request["role"], request["project"])
    return jsonify(TokenCreatedOut().dump({"token": token, "secret": secret})), 201


@bp.delete("/tokens/<token_id>")
def revoke_token(token_id: str):
    """Revoke a token (by id or name): it stops working at once
    ---
    delete:
      responses:
        200: {description: the revoked token, content: {application/json: {schema: TokenEnvelope}}}
    """
    return jsonify(TokenEnvelope().dump({"token": tokens.revoke_token(token_id)}))
