"""How every list of the API answers: filters on its main fields, a 422 for a query parameter it does not know,
and keyset pages (`limit`, an opaque `next` cursor, a `Link: <...>; rel="next"` header).

A list view declares its query as a `ListQuery` subclass (its filters as fields), has its service build the
filtered `select` and hands it to `keyset_page` with the columns it is ordered by (the last one unique), then
answers `page_response`. A page costs the same at any depth: the cursor holds where the previous page ended,
never an offset.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from flask import Response, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from web.errors import Unprocessable
from web.extensions import db

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR = 2048
_NOT_OURS = "not a cursor this API answered"


class Cursor(fields.String):
    """The previous page's `next`: the values of the ordering columns on its last row, as strings."""

    def _deserialize(self, value: object, attr: str | None, data: object, **kwargs: object) -> list[str]:
        text = super()._deserialize(value, attr, data, **kwargs)
        # Checked before decoding: the cursors this API answers are far shorter.
        if len(text) > MAX_CURSOR:
            raise ValidationError(_NOT_OURS)
        try:
            after = json.loads(base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4)))["after"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(_NOT_OURS) from exc
        # Strings only, short, and without NUL (PostgreSQL refuses it in a query parameter).
        if not isinstance(after, list) or not after or not all(_plain(v) for v in after):
            raise ValidationError(_NOT_OURS)
        return after


def _plain(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 255 and "\x00" not in value


def encode_cursor(values: Sequence[object]) -> str:
    """The cursor of a page that ends on a row with these ordering values (unpadded: nothing to escape in a URL)."""
    encoded = base64.urlsafe_b64encode(json.dumps({"after": [_text(v) for v in values]}).encode())
    return encoded.decode("ascii").rstrip("=")


def _text(value: object) -> str:
    if isinstance(value, datetime):
        # SQLite hands back naive datetimes; every stored time is UTC.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


class ListQuery(Schema):
    """The query string of a list: its filters (declared by subclasses), `limit` and `next`. A parameter the
    list does not know is a 422 naming it, never silently ignored."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"the most items on this page (default {DEFAULT_LIMIT})"},
    )
    next = Cursor(
        load_default=None,
        metadata={"description": "the previous page's `next`; absent: the first page", "maxLength": MAX_CURSOR},
    )


def load_query(schema: ListQuery) -> dict:
    """The list's query from the request; a repeated parameter is refused (one value per filter)."""
    repeated = sorted(key for key in request.args if len(request.args.getlist(key)) > 1)
    if repeated:
        raise Unprocessable(
            f"give each query parameter once: {', '.join(repeated)}",
            fields={key: ["given more than once"] for key in repeated},
        )
    # `project` is any request's, not the list's (web/auth.py scopes the request by it).
    return schema.load({key: value for key, value in request.args.items() if key != "project"})


def filters_of(query: dict) -> dict:
    """The filters given in a loaded list query (what is left besides `limit` and `next`)."""
    return {name: value for name, value in query.items() if name not in ("limit", "next")}


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    # The cursor of the following page, None on the last one.
    next: str | None


def keyset_page(
    query: Select,
    keys: Sequence[InstrumentedAttribute],
    after: list[str] | None,
    limit: int | None,
    *,
    descending: bool = False,
) -> Page[Any]:
    """Up to `limit` rows of `query` (every one if None) after the cursor `after`, ordered by `keys` (all
    ascending or all descending; the last key unique), and the cursor of the next page."""
    if after is not None:
        query = query.where(_after(keys, _values(keys, after), descending))
    query = query.order_by(*(key.desc() if descending else key.asc() for key in keys))
    rows = list(db.session.scalars(query if limit is None else query.limit(limit + 1)))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor([getattr(rows[-1], key.key) for key in keys]) if more else None)


def _values(keys: Sequence[InstrumentedAttribute], after: list[str]) -> list[object]:
    if len(after) != len(keys):
        raise Unprocessable(_NOT_OURS, fields={"next": [_NOT_OURS]})
    values: list[object] = []
    for key, text in zip(keys, after, strict=True):
        kind = key.type.python_type
        try:
            value = datetime.fromisoformat(text) if kind is datetime else kind(text)
        except ValueError:
            raise Unprocessable(_NOT_OURS, fields={"next": [_NOT_OURS]}) from None
        if isinstance(value, datetime):
            value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        values.append(value)
    return values


def _after(keys: Sequence[InstrumentedAttribute], values: list[object], descending: bool):
    """Rows strictly past `values` in the order of `keys`: (a > x) or (a = x and b > y) or ... (a row-value
    comparison spelled out), behind a plain range on the first key (a >= x), which lets every database start
    the page with an index range scan at the cursor instead of reading the rows before it."""
    clauses = []
    for i, key in enumerate(keys):
        past = key < values[i] if descending else key > values[i]
        clauses.append(and_(*(keys[j] == values[j] for j in range(i)), past))
    first = keys[0] <= values[0] if descending else keys[0] >= values[0]
    return and_(first, or_(*clauses))


def page_response(collection: str, items: list[dict], page: Page) -> Response:
    """`{collection: items, "next": cursor}` with a Link header to the next page (the same filters)."""
    response = jsonify({collection: items, "next": page.next})
    if page.next is not None:
        args = {**request.args.to_dict(), "next": page.next}
        response.headers["Link"] = f'<{request.path}?{urlencode(args)}>; rel="next"'
    return response
