"""Dispatch tokens and claims in Redis: how a job runs at most once per dispatch.

The dispatcher writes a job's current token before it publishes the message that carries it. A worker
claims the job in one atomic step that checks the token is still current (a re-routed or cancelled job's
old message is stale) and that nobody else holds a live lease. The lease is renewed while the job runs;
when the job ends the claim becomes `done`, so any later re-delivery of the message is a no-op.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

_PREFIX = "archq:job:"
DONE = "done"
# Long enough to outlive any re-delivery of the message (Redis visibility timeout is hours).
_KEEP_S = 7 * 24 * 3600

_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'stale' end
local holder = redis.call('GET', KEYS[2])
if not holder then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 'claimed'
end
if holder == ARGV[2] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 'claimed'
end
if holder == 'done' then return 'done' end
return 'taken'
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
  return 1
end
return 0
"""


class Claim(enum.StrEnum):
    CLAIMED = "claimed"
    STALE = "stale"  # the message's token is not the job's current one (re-routed, cancelled)
    TAKEN = "taken"  # another worker holds a live lease
    DONE = "done"  # the job already ran to its end


def token_key(job_id: str) -> str:
    return f"{_PREFIX}{job_id}:token"


def claim_key(job_id: str) -> str:
    return f"{_PREFIX}{job_id}:claim"


class ClaimStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)

    @classmethod
    def from_url(cls, url: str) -> ClaimStore:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2))

    def set_tokens(self, tokens: Iterable[tuple[str, str]]) -> None:
        """Make these (job id, token) pairs current, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id, token in tokens:
            pipe.set(token_key(job_id), token, ex=_KEEP_S)
        pipe.execute()

    def incr(self, key: str) -> int:
        return int(self._redis.incr(key))

    def revoke(self, job_id: str) -> None:
        """Make every message of this job stale (cancelled before it started)."""
        self._redis.delete(token_key(job_id))

    def claim(self, job_id: str, token: str, owner: str, lease_s: float) -> Claim:
        result = self._claim(keys=[token_key(job_id), claim_key(job_id)], args=[token, owner, _ms(lease_s)])
        return Claim(result.decode() if isinstance(result, bytes) else result)

    def holder(self, job_id: str) -> str | None:
        value = self._redis.get(claim_key(job_id))
        return value.decode() if value else None

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        return bool(self._renew(keys=[claim_key(job_id)], args=[owner, _ms(lease_s)]))

    def finish(self, job_id: str, owner: str) -> bool:
        return bool(self._finish(keys=[claim_key(job_id)], args=[owner, _KEEP_S]))

    @contextmanager
    def lease(self, job_id: str, owner: str, lease_s: float) -> Iterator[None]:
        """Renew the claim every third of the lease while the body runs."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(lease_s / 3):
                self.renew(job_id, owner, lease_s)

        thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
