"""Which conductor does the periodic work: a lease in Redis that one conductor holds at a time.

Any number of conductors consume `control` (heartbeats, job reports: each message is handled once by
whichever takes it), but the sweep (outbox, re-routing, recovery, down-marking) must not run twice at once:
two sweeps would both re-send the same job or both mark the same VMs. The conductor that sets the lease key
(SET NX PX) leads; it renews the key (only while it still holds it: compare-and-expire in one script) at
each sweep. When it dies the key expires and another conductor takes it at its next sweep, so a take-over
takes at most the lease plus one sweep interval.

The leader also stops itself in time: a sweep step starts only while the lease, counted from before the
renewal was sent, has a margin left; a leader that stalled (a long GC, a slow database) past its lease
skips the rest of that sweep instead of running beside the new leader.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

import redis

log = logging.getLogger(__name__)

LEADER_KEY = "archq:conductor:leader"

# Renews the lease only if this conductor still holds it; returns 1 when it did.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def conductor_id() -> str:
    """Names this conductor in the lease: host and pid for people, a random part so a restarted process with
    the same pid never mistakes the old lease for its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLease:
    def __init__(self, client: redis.Redis, lease_s: float, owner: str | None = None) -> None:
        self._redis = client
        self._lease_ms = max(1, int(lease_s * 1000))
        # Steps stop this long before the lease ends: room for the clocks of Redis and this process to differ.
        self._margin_s = lease_s / 4
        self.owner = owner or conductor_id()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._until = 0.0  # monotonic; 0 while not leading

    def hold(self) -> bool:
        """Takes or renews the lease; True while this conductor leads."""
        sent_at = time.monotonic()
        held = bool(self._renew(keys=[LEADER_KEY], args=[self.owner, self._lease_ms])) or bool(
            self._redis.set(LEADER_KEY, self.owner, nx=True, px=self._lease_ms)
        )
        was_leading = self._until > 0
        self._until = sent_at + self._lease_ms / 1000 if held else 0.0
        if held and not was_leading:
            log.info("leading the periodic work as %s", self.owner)
        elif was_leading and not held:
            log.warning("no longer leading the periodic work (%s holds the lease)", self.leader())
        return held

    def still_held(self) -> bool:
        """Whether a next step may start: the lease, as renewed last, has its margin left."""
        return self._until > 0 and time.monotonic() < self._until - self._margin_s

    def leader(self) -> str | None:
        value = self._redis.get(LEADER_KEY)
        return value.decode() if isinstance(value, bytes) else value

    def release(self) -> None:
        """Hands the lease over at once on a clean stop (another conductor need not wait for it to expire)."""
        if self._until > 0:
            self._release(keys=[LEADER_KEY], args=[self.owner])
            self._until = 0.0
