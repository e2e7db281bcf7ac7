"""A page of GET /api/v1/jobs (limit 50) at the start of a long list and deep in it, in process on SQLite:
the keyset page (the `next` cursor of the row before it) against the OFFSET query it replaced, at the same
depth. Prints each one's median and its deep/first ratio: a keyset page costs the same at any depth, an
OFFSET page grows with it."""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from bench.common import alternate, begin, bench_parser, end, median
from migrations import upgrade
from queues.config import Settings
from queues.vocabulary import JobKind, JobState
from tests.support.services import RedisServer
from web import create_app
from web.extensions import db
from web.models import Job, utcnow
from web.paging import encode_cursor
from web.services.tokens import create_token

PAGE = 50


def fill(count: int) -> None:
    """`count` finished jobs, one a second apart, in batches."""
    start = utcnow() - timedelta(seconds=count)
    rows = [
        {
            "id": str(uuid.uuid4()), "kind": JobKind.CREATE, "state": JobState.SUCCEEDED, "queue": "amd64",
            "task": JobKind.CREATE.task, "payload": {}, "token": "t", "result": {}, "version": 1,
            "created_at": start + timedelta(seconds=n),
        }
        for n in range(count)
    ]  # fmt: skip
    for first in range(0, count, 5000):
        db.session.execute(insert(Job), rows[first : first + 5000])
    db.session.commit()


def timed_ms(times: int, call) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    count = 5_000 if args.quick else 200_000
    rounds = args.rounds or (2 if args.quick else 5)
    singles = 5 if args.quick else 20
    started = begin(f"lists: a page of {PAGE} jobs first and {count - PAGE} deep, keyset against OFFSET", args, False)
    with tempfile.TemporaryDirectory(prefix="archq-bench-") as tmp:
        redis_server = RedisServer(Path(tmp))
        redis_server.start()
        try:
            settings = Settings(
                broker_url=redis_server.url, redis_url=redis_server.url, data_dir=Path(tmp) / "data",
                database_url=f"sqlite:///{tmp}/lists.db",
            )  # fmt: skip
            upgrade(settings.database_url)
            app = create_app(settings)
            with app.app_context():
                fill(count)
                client = app.test_client()
                client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {create_token('bench-lists', 'viewer')[1]}"
                newest_first = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
                before = db.session.scalars(newest_first.offset(count - PAGE - 1).limit(1)).one()
                cursor = encode_cursor([before.created_at, before.id])

                def keyset(after: str | None) -> None:
                    response = client.get("/api/v1/jobs", query_string={"limit": PAGE, "next": after})
                    assert response.status_code == 200 and len(response.get_json()["jobs"]) == PAGE

                def offset(skip: int) -> None:
                    assert len(list(db.session.scalars(newest_first.offset(skip).limit(PAGE)))) == PAGE

                results = alternate(
                    rounds,
                    {
                        "keyset first": lambda _n: {"ms": timed_ms(singles, lambda: keyset(None))},
                        "keyset deep": lambda _n: {"ms": timed_ms(singles, lambda: keyset(cursor))},
                        "OFFSET first (query only)": lambda _n: {"ms": timed_ms(singles, lambda: offset(0))},
                        "OFFSET deep (query only)": lambda _n: {"ms": timed_ms(singles, lambda: offset(count - PAGE))},
                    },
                )
                db.engine.dispose()
        finally:
            redis_server.stop()
    medians = {name: median(samples["ms"]) for name, samples in results.items()}
    for name, value in medians.items():
        print(f"{name:>28}: {value:8.2f} ms")
    print(f"keyset page deep/first: {medians['keyset deep'] / medians['keyset first']:.2f}x")
    print(f"OFFSET page deep/first: {medians['OFFSET deep (query only)'] / medians['OFFSET first (query only)']:.2f}x")
    end(started)


if __name__ == "__main__":
    main()
