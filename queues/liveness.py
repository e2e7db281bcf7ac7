"""Host liveness in Redis: each heartbeat of a worker is one ZADD (the host, at Redis's clock), not a message.

A worker sends its full heartbeat (capacity, domains, addresses, networks... `Task.HEARTBEAT` on `control`)
only when it differs from the last one it sent, and at least every `FULL_BEAT_EVERY_S`; every beat, changed or
not, also marks the host alive here. The leading conductor reads the hosts marked since its last look, in one
call, and writes their `last_seen` in one batched statement: an unchanged beat costs the conductor a share of
that statement instead of a Celery task and a transaction of its own, so 10,000 hosts fit one conductor.

The score is Redis's clock, so workers' clocks do not matter; the conductor turns each score into an age by
Redis's clock and stamps `last_seen` with its own clock minus that age.

Each mark also carries the jobs the worker's runs hold, written in the same script as the mark's time: the
conductor resumes a job whose lease lapsed only if a mark made after the lapse does not list it (web/services/
recovery.py). A list carried by the full beat would not do: that beat waits in the control queue while the mark
is already there, so the host would look alive with a list from before the job was claimed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

SEEN_KEY = "archq:hosts:seen"
# host -> the digest of the last full beat a conductor recorded: a worker whose full beat was lost (expired in a
# backlog, its conductor killed) sends it again.
RECORDED_KEY = "archq:hosts:recorded"
# host -> JSON list of the jobs its worker's runs held at its last mark.
RUNNING_KEY = "archq:hosts:running"
# A full beat that changed nothing is still sent this often: it heals a full beat lost in transit (expired in a
# backlog, a conductor killed mid-task) and refreshes how fresh the VMs' addresses are.
FULL_BEAT_EVERY_S = 300.0

# Marks the host with its running jobs and answers the digest of its last recorded full beat.
MARK_SCRIPT = """
local now = redis.call('TIME')
redis.call('ZADD', KEYS[1], string.format('%d.%06d', now[1], now[2]), ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[2], ARGV[1])
"""

# The host's last mark: Redis's time now, the mark's score and the jobs it listed.
_LAST_MARK = """
local now = redis.call('TIME')
return {string.format('%d.%06d', now[1], now[2]), redis.call('ZSCORE', KEYS[1], ARGV[1]),
        redis.call('HGET', KEYS[2], ARGV[1])}
"""

# Hosts marked after ARGV[1] (exclusive), with their scores, and Redis's time now.
_SEEN_AFTER = """
local now = redis.call('TIME')
local seen = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
return {string.format('%d.%06d', now[1], now[2]), seen}
"""


def digest(facts: dict) -> str:
    """What a full beat says, all but its time, as a short stable digest."""
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def mark_alive(client: redis.Redis, host: str, running_jobs: Sequence[str]) -> str | None:
    """Marks the host alive now, its runs holding `running_jobs`; returns the digest of the last full beat a
    conductor recorded for it."""
    recorded = client.eval(MARK_SCRIPT, 3, SEEN_KEY, RECORDED_KEY, RUNNING_KEY, host, json.dumps(sorted(running_jobs)))
    return recorded.decode() if isinstance(recorded, bytes) else recorded


@dataclass(frozen=True)
class Mark:
    age_s: float  # seconds since the host's last mark, by Redis's clock
    running_jobs: frozenset[str]  # what its runs held then


def last_mark(client: redis.Redis, host: str) -> Mark | None:
    """The host's last mark with the jobs it listed; None if it has none."""
    now, score, running = client.eval(_LAST_MARK, 2, SEEN_KEY, RUNNING_KEY, host)
    if score is None or running is None:
        return None
    return Mark(max(0.0, float(now) - float(score)), frozenset(json.loads(running)))


def note_recorded(client: redis.Redis, host: str, beat_digest: str) -> None:
    client.hset(RECORDED_KEY, host, beat_digest)


@dataclass(frozen=True)
class Seen:
    now: float  # Redis's clock at the read
    ages: dict[str, float]  # host -> seconds since its last mark, by Redis's clock

    @property
    def next_after(self) -> float:
        """The score to read after next time: the read's time, less a millisecond so that a mark stamped in the
        read's own microsecond is read again rather than missed (reading a host twice is harmless)."""
        return self.now - 0.001


def seen_after(client: redis.Redis, after: float) -> Seen:
    """The hosts marked after the score `after` (Redis's clock, seconds)."""
    now, flat = client.eval(_SEEN_AFTER, 1, SEEN_KEY, f"{after:.6f}")
    now = float(now)
    hosts, scores = flat[0::2], flat[1::2]
    ages = {
        (host.decode() if isinstance(host, bytes) else host): max(0.0, now - float(score))
        for host, score in zip(hosts, scores, strict=True)
    }
    return Seen(now, ages)
