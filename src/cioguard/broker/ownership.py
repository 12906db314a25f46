"""Who owns a claimed message, and handing back what a silent consumer owned.

Every message a consumer of :mod:`cioguard.broker.transport` has claimed is recorded, by the claim
script itself, in its channel's *owned* hash (``_cioguard.owned:<token>``: delivery tag ->
queue), and the channel's token is stamped with Redis's clock in the owners registry
(``_cioguard.owners``) by every claim and by a heartbeat thread. An ack removes the tag. When a
token's stamp is older than ``stale_after`` (15 s by default), every live consumer's heartbeat
thread tries to take it (``ZREM``: exactly one succeeds) and hands each of its tags back to its
queue with kombu's own ``restore_by_tag`` (a WATCH/MULTI transaction, atomic with kombu's
visibility-timeout restore, so each message comes back once, marked redelivered). So after a
kill -9 of a node, the surviving nodes redeliver what it held within seconds, not after the
visibility timeout (900 s by default), which stays as the backstop for anything this misses
(a sweeper killed half-way through a hand-back, for one).

The heartbeat runs in a thread so a busy event loop (a batching worker with its prefetch window
full, a slow callback) is not taken for a dead consumer. The thread stops vouching for its
channel when the event loop has shown no sign of life for :data:`LOOP_SILENT_MAX_S`: a process
whose loop hangs for good gives its messages back too.

Hand-written because neither kombu nor Celery has consumer ownership for Redis (RabbitMQ's broker
does it when the connection drops); it is small and uses kombu's restore for the delicate part.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cioguard.broker.failures import describe

log = logging.getLogger("cioguard.broker.transport")

OWNERS_REGISTRY = "_cioguard.owners"
"""Sorted set: channel token -> Redis time of its last heartbeat or claim."""
OWNED_PREFIX = "_cioguard.owned:"
"""Hashes ``_cioguard.owned:<token>``: delivery tag -> queue of each message the channel holds."""
CLAIM_PREFIX = "_cioguard.claim:"
"""Strings ``_cioguard.claim:<claim id>``: the tags a claim took, kept :data:`CLAIM_KEEP_S`."""
CLAIM_KEEP_S = 60
LOOP_SILENT_MAX_S = 300.0
"""Stop vouching for a channel whose event loop has done nothing for this long."""
SCAN_EVERY_S = 60.0
"""How often a heartbeat thread looks for in-flight lists and owned hashes nobody registered."""
OWNERS_PER_SWEEP = 20


def owned_key(token: str) -> str:
    return f"{OWNED_PREFIX}{token}"


def hand_back_owned(channel: Any, client: Any, token: str) -> int:
    """Hand every message still owned by ``token`` back to its queue; returns how many.

    A tag no longer in kombu's unacked hash was acknowledged or restored already: skipped. Each
    tag leaves the owned hash only after its restore, so a failure half-way leaves the rest owned
    (and the visibility timeout still covers them)."""
    key = owned_key(token)
    restored = 0
    for tag in client.hkeys(key):
        tag = tag.decode() if isinstance(tag, bytes) else tag
        if client.hexists(channel.unacked_key, tag):
            channel.qos.restore_by_tag(tag, client=client)
            restored += 1
        client.hdel(key, tag)
    return restored


def redis_now(client: Any) -> float:
    """Redis's clock (one clock for every host), in seconds with microseconds."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def sweep_owners(channel: Any, client: Any, stale_after_s: float) -> int:
    """Take the tokens silent for ``stale_after_s`` (one sweeper wins each) and hand back what they
    owned; returns messages handed back."""
    now = redis_now(client)
    stale = client.zrangebyscore(
        OWNERS_REGISTRY, "-inf", now - stale_after_s, start=0, num=OWNERS_PER_SWEEP
    )
    restored = 0
    for raw in stale:
        token = raw.decode() if isinstance(raw, bytes) else raw
        if token == channel.token:
            continue  # never one's own (its thread was late): it beats again in a moment
        if client.zrem(OWNERS_REGISTRY, token):  # this sweeper won the token
            moved = hand_back_owned(channel, client, token)
            restored += moved
            if moved:
                log.warning("handed back %d messages of a consumer that went silent", moved)
    return restored


def register_orphans(client: Any, inflight_prefix: str, inflight_registry: str) -> int:
    """Register in-flight lists and owned hashes that no registry lists, with the current time,
    so the next sweeps after ``stale_after`` hand them back unless their owner beats; returns how
    many were found. (A consumer can write into a list whose entry was forgotten if it was silent
    for longer than the sweep keeps entries.)"""
    now = redis_now(client)
    found = 0
    for key in client.scan_iter(match=f"{inflight_prefix}*", count=1000):
        if client.zadd(inflight_registry, {key: now}, nx=True):
            found += 1
    for key in client.scan_iter(match=f"{OWNED_PREFIX}*", count=1000):
        token = (key.decode() if isinstance(key, bytes) else key)[len(OWNED_PREFIX) :]
        if client.zadd(OWNERS_REGISTRY, {token: now}, nx=True):
            found += 1
    return found


class Heartbeat(threading.Thread):
    """Beats for one consuming channel and sweeps for everyone, every ``channel.heartbeat_s``."""

    def __init__(self, channel: Any) -> None:
        super().__init__(name="cioguard-heartbeat", daemon=True)
        self._channel = channel
        self._stopped = threading.Event()
        self.loop_alive_at = time.monotonic()
        self.last_ok = time.monotonic()
        """When a beat and sweep last succeeded (the event loop steps in when this lags)."""
        self._scanned_at = time.monotonic()
        self._failing = False

    def stop(self) -> None:
        self._stopped.set()

    def healthy(self, within_s: float) -> bool:
        return self.is_alive() and time.monotonic() - self.last_ok <= within_s

    def run(self) -> None:
        channel = self._channel
        client: Any = None
        try:
            while not self._stopped.wait(channel.heartbeat_s):
                if time.monotonic() - self.loop_alive_at > LOOP_SILENT_MAX_S:
                    continue  # the event loop hangs: let the others take this channel's work
                if client is None:
                    client = channel._create_client()
                self._once(channel, client)
        except Exception:
            log.exception("broker heartbeat thread stopped; the event loop beats instead")
        finally:
            if client is not None:
                client.close()

    def _once(self, channel: Any, client: Any) -> None:
        try:
            channel.beat(client)
            channel.sweep(client)
            if time.monotonic() - self._scanned_at >= SCAN_EVERY_S:
                self._scanned_at = time.monotonic()
                channel.scan(client)
        except Exception as exc:  # Redis away: the event loop reconnects; keep trying
            if not self._failing:
                log.warning("broker heartbeat failed: the broker %s; retrying", describe(exc))
            self._failing = True
        else:
            self._failing = False
            self.last_ok = time.monotonic()
