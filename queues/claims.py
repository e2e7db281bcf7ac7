"""Dispatch tokens and claims in Redis: how a job runs at most once per dispatch.

A re-dispatch (a re-route, a re-send) writes the job's new current token before it publishes the message
that carries it; a job's first message needs no write beforehand: the first claim adopts the token it
carries, and a cancel before that leaves `revoked` in its place. A worker claims the job in one atomic step
that checks the token is still current (a re-routed or cancelled job's old message is stale) and that
nobody else holds a live lease. The lease is renewed while the job runs, by a thread of its own that does
nothing else, several times per lease; when the job ends the claim becomes `done`, so any later re-delivery
of the message is a no-op. Each claim and renewal also records when the lease ends (by Redis's clock), so the
conductor can tell how long ago a lease lapsed, not only that it did.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

import redis

_PREFIX = "archq:job:"
DONE = "done"
# Long enough to outlive any re-delivery of the message (Redis visibility timeout is hours).
_KEEP_S = 7 * 24 * 3600

# KEYS[3] keeps when the lease ends (ms, Redis's clock) after the claim key itself has expired.
_LEASE_UNTIL = """
local function lease_until(key, lease_ms, keep_s)
  local now = redis.call('TIME')
  redis.call('SET', key, now[1] * 1000 + math.floor(now[2] / 1000) + lease_ms, 'EX', keep_s)
end
"""

_CLAIM = (
    _LEASE_UNTIL
    + """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
elseif current ~= ARGV[1] then
  return 'stale'
end
local holder = redis.call('GET', KEYS[2])
if not holder or holder == ARGV[2] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  lease_until(KEYS[3], tonumber(ARGV[3]), ARGV[4])
  return 'claimed'
end
if holder == 'done' then return 'done' end
return 'taken'
"""
)

# A run whose lease lapsed (its process stalled longer than the lease) takes it back if nobody else did and the
# job was not dispatched again meanwhile (its token is still the current one).
_RENEW = (
    _LEASE_UNTIL
    + """
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] and (holder or redis.call('GET', KEYS[2]) ~= ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
lease_until(KEYS[3], tonumber(ARGV[2]), ARGV[4])
return 1
"""
)

_LAPSED_MS = """
local ends = redis.call('GET', KEYS[1])
if not ends then return false end
local now = redis.call('TIME')
return now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(ends)
"""

# Renewals per lease: a renewal may fail or come late (a broker blip, a starved process) this many times less
# one before the lease lapses; a lapse counts only once it has lasted one more renewal interval.
RENEWALS_PER_LEASE = 4

# The lease may have lapsed while the job ran (a broker outage longer than the lease): the run still ends the
# job unless another run took it over meanwhile.
_FINISH = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
  return 1
end
return 0
"""

_REVOKE_UNLESS_CLAIMED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], 'revoked', 'EX', ARGV[1])
return 1
"""

# A re-route's new token, set only while nobody has claimed the job (a run of its old message began, or ended)
# and it was not cancelled: once set, every old message is stale, so no run of it can begin.
_REISSUE_UNLESS_CLAIMED = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('GET', KEYS[1]) == 'revoked' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# A publisher that read the job before it was cancelled must not bring its token back.
_SET_TOKENS = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= 'revoked' then
    redis.call('SET', key, ARGV[i], 'EX', ARGV[#KEYS + 1])
  end
end
return 1
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


def result_key(job_id: str) -> str:
    return f"{_PREFIX}{job_id}:result"


def lease_key(job_id: str) -> str:
    return f"{_PREFIX}{job_id}:lease_until"


def cancel_key(job_id: str) -> str:
    return f"{_PREFIX}{job_id}:cancel"


EPOCH_KEY = "archq:broker:epoch"


def _text(value: bytes | str | None) -> str | None:
    """A Redis reply as text (archq's clients do not decode replies); None for a missing or empty value."""
    if not value:
        return None
    return value.decode() if isinstance(value, bytes) else value


class ClaimStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._revoke_unless_claimed = client.register_script(_REVOKE_UNLESS_CLAIMED)
        self._reissue_unless_claimed = client.register_script(_REISSUE_UNLESS_CLAIMED)
        self._set_tokens = client.register_script(_SET_TOKENS)
        self._lapsed_ms = client.register_script(_LAPSED_MS)

    @classmethod
    def from_url(cls, url: str) -> ClaimStore:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2))

    def set_tokens(self, tokens: Iterable[tuple[str, str]]) -> None:
        """Make these (job id, token) pairs current, in one round trip; a revoked job stays revoked."""
        pairs = list(tokens)
        if pairs:
            self._set_tokens(keys=[token_key(j) for j, _ in pairs], args=[t for _, t in pairs] + [_KEEP_S])

    def ping(self) -> None:
        self._redis.ping()

    def revoke_unless_claimed(self, job_id: str) -> bool:
        """Make every message of this job stale, unless a worker already claimed it (then False)."""
        return bool(self._revoke_unless_claimed(keys=[token_key(job_id), claim_key(job_id)], args=[_KEEP_S]))

    def reissue_unless_claimed(self, job_id: str, token: str) -> bool:
        """Make `token` the job's current one, unless a worker claimed it or it was cancelled (then False)."""
        keys = [token_key(job_id), claim_key(job_id)]
        return bool(self._reissue_unless_claimed(keys=keys, args=[token, _KEEP_S]))

    def request_cancel(self, job_id: str) -> None:
        self._redis.set(cancel_key(job_id), "1", ex=_KEEP_S)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self._redis.exists(cancel_key(job_id)))

    def result(self, job_id: str) -> str | None:
        """The final report a worker stored with its `done` claim, for reports lost in transit."""
        value = self._redis.get(result_key(job_id))
        return _text(value)

    def broker_data_lost(self) -> bool:
        """True when Redis lost its data (restarted without persistence, flushed): the sentinel is gone, and
        with it every message that was waiting in a queue. `mark_epoch` once the loss is dealt with."""
        return not self._redis.exists(EPOCH_KEY)

    def mark_epoch(self) -> None:
        self._redis.set(EPOCH_KEY, "1")

    def claim(self, job_id: str, token: str, owner: str, lease_s: float) -> Claim:
        result = self._claim(
            keys=[token_key(job_id), claim_key(job_id), lease_key(job_id)], args=[token, owner, _ms(lease_s), _KEEP_S]
        )
        return Claim(result.decode() if isinstance(result, bytes) else result)

    def holder(self, job_id: str) -> str | None:
        value = self._redis.get(claim_key(job_id))
        return _text(value)

    def renew(self, job_id: str, owner: str, token: str, lease_s: float) -> bool:
        """Extend `owner`'s lease, or take it back if it lapsed and nobody took the job meanwhile."""
        keys = [claim_key(job_id), token_key(job_id), lease_key(job_id)]
        return bool(self._renew(keys=keys, args=[owner, _ms(lease_s), token, _KEEP_S]))

    def lapsed_for(self, job_id: str) -> float | None:
        """Seconds since the job's lease ended (negative while it runs), None when it never had one."""
        value = self._lapsed_ms(keys=[lease_key(job_id)])
        return None if value is None else int(value) / 1000

    def finish(self, job_id: str, owner: str, report: str = "") -> bool:
        """Mark the job done and keep its final report beside the claim, atomically; False when another run
        holds the job now (this run's lease lapsed and the job was taken over)."""
        return bool(self._finish(keys=[claim_key(job_id), result_key(job_id)], args=[owner, _KEEP_S, report]))

    @contextmanager
    def lease(self, job_id: str, owner: str, token: str, lease_s: float) -> Iterator[None]:
        """Renew the claim RENEWALS_PER_LEASE times per lease while the body runs, from a thread that does
        nothing else: whatever the body blocks on, the renewals go on."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(lease_s / RENEWALS_PER_LEASE):
                # A broker blip: the next renewal may land; the conductor resumes only a run that is gone.
                with suppress(redis.RedisError):
                    self.renew(job_id, owner, token, lease_s)

        thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
