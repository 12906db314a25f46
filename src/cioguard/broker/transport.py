"""kombu's Redis transport without its lost-message window: consumers pop with BLMOVE.

Why this is hand-written. kombu's Redis transport pops a message with ``BRPOP`` and only then
records it as unacknowledged (``QoS.append``: ``ZADD unacked_index`` + ``HSET unacked``). Between
the two, the message exists only in the worker's socket buffer: for as long as the event loop
takes to read the reply, and for as long as kombu pauses reading because the prefetch window is
full (a batching worker is often there). A worker killed in that window (kill -9, OOM killer, a
lost host) loses the message: it is in no queue and in no unacknowledged set, so no visibility
timeout brings it back. cioguard's fault suite lost jobs this way, and
``tests/test_transport.py`` reproduces it with the stock transport. Neither kombu nor Celery has a
reliable-queue mode for Redis (RabbitMQ's consumer acks close the window, but the product runs
on Redis), and the fix is small enough to keep here, beside the one Celery setting that selects it:

* a consumer pops with ``BLMOVE queue inflight RIGHT LEFT``: the message moves, atomically, into
  an in-flight list that belongs to this channel (one per channel and queue);
* when the worker reads the reply, one Lua script (``inflight_claim.lua``) takes the message out
  of the in-flight list and records it as unacknowledged, and takes as many more as the prefetch
  window allows straight from the queue into the unacknowledged set. At every instant a message is
  in the queue, in an in-flight list, or in kombu's unacknowledged set (which the visibility
  timeout hands out again). It also costs one round trip per group of messages where kombu
  spends two per message;
* the claim also records each claimed message under the channel's token (:mod:`.ownership`);
  a claim is idempotent (a claim id; a re-run after a lost reply returns what the first run took);
* each channel stamps its token and in-flight lists with Redis's clock (a heartbeat thread,
  every few seconds), and every worker hands back to their queues the in-flight lists and the
  claimed messages of consumers whose heartbeat is older than ``inflight_stale_after`` (15 s by
  default): after a kill -9, within seconds rather than after the visibility timeout. Lists go
  back in one Lua script per run, messages one kombu restore each, so each is handed back once
  however many workers sweep;
* acknowledgements use one client per channel instead of a new client per call, and
  :meth:`ReliableQoS.acks_in_one_round_trip` lets a batch acknowledge all its messages at once.

Everything else (publishing, the visibility timeout, fanout, the event loop) is kombu's.
Limits: one Redis list per queue (``priority_steps = (0,)``: cioguard sends no priorities), no
``global_keyprefix``, Redis 6.2 or newer (BLMOVE), and a consumer of several queues waits at most
:data:`MULTI_QUEUE_WAIT_S` on each in turn instead of on all at once.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import uuid
from collections.abc import Iterator
from importlib.resources import files
from queue import Empty
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

# kombu's transport internals carry no type hints; they are used (and subclassed) as Any.
kombu_redis: Any = importlib.import_module("kombu.transport.redis")
virtual: Any = importlib.import_module("kombu.transport.virtual")
kombu_json: Any = importlib.import_module("kombu.utils.json")

from cioguard.broker import ownership  # noqa: E402 (after the Any aliases it does not need)

log = logging.getLogger("cioguard.broker.transport")

INFLIGHT_REGISTRY = "_cioguard.inflight"
"""Sorted set: in-flight list key -> Redis time of its channel's last heartbeat."""
INFLIGHT_PREFIX = "_cioguard.inflight:"
"""In-flight lists are ``_cioguard.inflight:<channel token>:<queue>``."""
MULTI_QUEUE_WAIT_S = 0.2
DEFAULT_STALE_AFTER_S = 15.0
"""A consumer silent this long (no heartbeat, no claim) is taken for dead: what it held goes back.
The heartbeat thread beats every fifth of it, so only a process that is gone, cut off from Redis
or frozen that long is taken; the price of a false "dead" is a redelivery (the final-row check
absorbs it), never a loss."""
FORGET_AFTER_S = 600.0
"""A silent in-flight list keeps its registry entry this long (see inflight_sweep.lua)."""
SWEEP_LIMIT = 1000
CLAIM_MAX = 100
"""At most this many messages per claim, whatever the prefetch window."""

_HEARTBEAT = files(__package__ or "cioguard").joinpath("inflight_heartbeat.lua").read_text()
_SWEEP = files(__package__ or "cioguard").joinpath("inflight_sweep.lua").read_text()
_CLAIM = files(__package__ or "cioguard").joinpath("inflight_claim.lua").read_text()


def inflight_key(token: str, queue: str) -> str:
    return f"{INFLIGHT_PREFIX}{token}:{queue}"


def sweep_stale(
    client: Any,
    stale_after_s: float,
    limit: int = SWEEP_LIMIT,
    forget_after_s: float = FORGET_AFTER_S,
) -> int:
    """Hand the in-flight lists of silent consumers back to their queues; returns messages moved."""
    forget = max(forget_after_s, stale_after_s)
    return int(client.eval(_SWEEP, 1, INFLIGHT_REGISTRY, stale_after_s, limit, forget))


class ReliableQoS(kombu_redis.QoS):  # type: ignore[misc]
    """Acks on the channel's own client, one round trip per batch inside
    :meth:`acks_in_one_round_trip`; messages claimed by the Lua script are already recorded."""

    _deferred: list[str] | None = None

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.claimed:
            virtual.QoS.append(self, message, delivery_tag)  # recorded in Redis by the claim
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if self._deferred is not None:
            self._deferred.append(delivery_tag)
        else:
            self._remove(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    @contextlib.contextmanager
    def acks_in_one_round_trip(self) -> Iterator[None]:
        """Acks inside the block reach Redis together when it ends. If that fails, the messages
        stay unacknowledged and come back after the visibility timeout (at least once)."""
        self._deferred = []
        try:
            yield
        finally:
            tags, self._deferred = self._deferred, None
            if tags:
                try:
                    self._remove(*tags)
                except self.channel.connection_errors:
                    log.warning("acks of %d messages did not reach Redis: redelivered", len(tags))

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue)  # restored (requeue) or removed
        self.channel.own_client.hdel(self.channel.owned_key, delivery_tag)

    def _remove(self, *tags: str) -> None:
        with self.channel.own_client.pipeline(transaction=False) as pipe:
            pipe.zrem(self.unacked_index_key, *tags)
            pipe.hdel(self.unacked_key, *tags)
            pipe.hdel(self.channel.owned_key, *tags)
            pipe.execute()


class ReliableChannel(kombu_redis.Channel):  # type: ignore[misc]
    """A Redis channel whose consumers pop into an in-flight list (see the module docstring)."""

    QoS = ReliableQoS
    priority_steps = (0,)
    inflight_stale_after: float | None = None
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "inflight_stale_after")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("cioguard's Redis transport does not support global_keyprefix")
        self._token = uuid.uuid4().hex
        self._inflight: set[str] = set()
        self._no_ack_queues: set[str] = set()
        self._popping_from: str | None = None
        self._beat_at = float("-inf")
        self._own_client: Any = None
        self._heartbeat: ownership.Heartbeat | None = None
        self._consumed = False
        self.claimed = False

    @property
    def token(self) -> str:
        return self._token

    def _subscribe(self) -> None:
        """kombu's subscribe, on a pub/sub connection that never retries inside redis-py.

        redis-py retries a failed read once after reconnecting. kombu set this connection up
        itself, so redis-py does not re-subscribe it then, and the retried read waits, without a
        timeout, for a message that never comes: whenever Redis (or, after a Sentinel failover,
        the new master) answered the reconnect, the worker's event loop froze for good. Without
        the retry the error reaches kombu, and Celery reconnects and re-subscribes everything.
        """
        super()._subscribe()
        connection = self.subclient.connection
        if connection is not None:
            connection.retry = Retry(NoBackoff(), 0)

    @property
    def owned_key(self) -> str:
        """This channel's owned hash (see :mod:`.ownership`)."""
        return ownership.owned_key(self._token)

    @property
    def own_client(self) -> Any:
        """One client (on the channel's pool) for this channel's commands: kombu builds a new
        client object for each, which costs more than the command on a busy consumer."""
        if self._own_client is None:
            self._own_client = self._create_client()
        return self._own_client

    @property
    def stale_after_s(self) -> float:
        if self.inflight_stale_after:
            return float(self.inflight_stale_after)
        return min(float(self.visibility_timeout), DEFAULT_STALE_AFTER_S)

    @property
    def heartbeat_s(self) -> float:
        return max(0.5, min(10.0, self.stale_after_s / 5))

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        no_ack = kwargs.get("no_ack", args[0] if args else False)
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        consumer_tag = super().basic_consume(queue, *args, **kwargs)
        self._consumed = True
        if self._heartbeat is None:
            self._heartbeat = ownership.Heartbeat(self)
            self._heartbeat.start()
        return consumer_tag

    def loop_alive(self) -> None:
        """The event loop is turning: the heartbeat thread may go on vouching for this channel.
        If the thread has not managed a beat lately (or is gone), the loop beats and sweeps."""
        beat = self._heartbeat
        if beat is not None:
            beat.loop_alive_at = time.monotonic()
        if not self._consumed or self.closed:
            return
        lagging = beat is None or not beat.healthy(within_s=2 * self.heartbeat_s)
        if lagging and time.monotonic() - self._beat_at >= self.heartbeat_s:
            with contextlib.suppress(*self.connection_errors):
                self.inflight_tick()

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        queue = queues[0]
        self._queue_cycle.rotate(queue)  # the next start pops from the next queue
        wait = self.brpop_timeout if timeout is None else timeout
        if len(queues) > 1:
            wait = min(wait, MULTI_QUEUE_WAIT_S)
        key = inflight_key(self._token, queue)
        if key not in self._inflight:
            self._inflight.add(key)
            self._beat_at = float("-inf")
        if time.monotonic() - self._beat_at >= self.heartbeat_s:
            self.beat(self.own_client)  # registered before the first pop can move into it
        self.loop_alive()
        self._popping_from = queue
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command("BLMOVE", queue, key, "RIGHT", "LEFT", wait or 0)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not item:
                raise Empty()
            queue = self._popping_from
            assert queue is not None
            self._deliver_all(queue, self._claim(queue, item))
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _claim(self, queue: str, item: bytes) -> list[bytes | dict[str, Any]]:
        """Claim ``item`` and what the prefetch window allows. The claim id makes a retried EVAL
        (redis-py retries on a lost reply) return what the first run claimed."""
        record = queue not in self._no_ack_queues
        room = self.qos.can_consume_max_estimate()
        more = max(0, min(CLAIM_MAX, room if room is not None else CLAIM_MAX) - 1)
        claim_key = f"{ownership.CLAIM_PREFIX}{uuid.uuid4().hex}"
        keys = (
            inflight_key(self._token, queue), queue, self.unacked_key, self.unacked_index_key,
            self.owned_key, ownership.OWNERS_REGISTRY, claim_key,
        )  # fmt: skip
        args = (
            item,
            more,
            time.time(),
            "1" if record else "0",
            self._token,
            ownership.CLAIM_KEEP_S,
        )
        replayed, *got = self.own_client.eval(_CLAIM, len(keys), *keys, *args)
        self._beat_at = time.monotonic()  # a claim stamps the token
        if not replayed:
            return list(got)
        log.warning("a claim's reply was lost; delivering what it claimed (%d)", len(got))
        return [kombu_json.loads(entry.decode())[0] for entry in got if entry]

    def _deliver_all(self, queue: str, raws: list[bytes | dict[str, Any]]) -> None:
        """Hand claimed messages to the consumer. If its callback raises, the ones not yet handed
        over stay in the unacknowledged set: handed out again at close or after the visibility
        timeout (at least once, like any message of a failed consumer)."""
        self.claimed = True
        try:
            for raw in raws:
                if isinstance(raw, dict):
                    message = raw
                else:
                    try:
                        message = kombu_json.loads(raw.decode())
                    except ValueError:
                        log.error("dropped a message on queue %s that is not JSON", queue)
                        continue
                self.connection._deliver(message, queue)
        finally:
            self.claimed = False

    def beat(self, client: Any) -> None:
        """Stamp this channel's token and in-flight lists with Redis's clock (any thread)."""
        self._beat_at = time.monotonic()
        keys = sorted(self._inflight)
        client.eval(_HEARTBEAT, 2, INFLIGHT_REGISTRY, ownership.OWNERS_REGISTRY, self._token, *keys)

    def sweep(self, client: Any) -> None:
        """Hand back the in-flight lists and claimed messages of silent consumers."""
        if self.active_queues:
            sweep_stale(client, self.stale_after_s)
            ownership.sweep_owners(self, client, self.stale_after_s)

    def scan(self, client: Any) -> None:
        """Register in-flight lists and owned hashes that no registry lists (see ownership)."""
        if self.active_queues and ownership.register_orphans(
            client, INFLIGHT_PREFIX, INFLIGHT_REGISTRY
        ):
            log.warning("found in-flight state nobody registered; it is handed back if silent")

    def inflight_tick(self) -> None:
        """One heartbeat and sweep from the caller's thread (the heartbeat thread does this)."""
        self.beat(self.own_client)
        self.sweep(self.own_client)

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._in_poll:
            with contextlib.suppress(Empty):
                self._brpop_read()
        if not self.closed and self._consumed:
            # On a connection error, the sweep of another worker hands them back later.
            with contextlib.suppress(*self.connection_errors):
                self._release_inflight()
                self._release_owned()
        super().close()  # kombu hands back what it delivered and was not acknowledged
        self._own_client = None

    def _release_owned(self) -> None:
        """Hand back what the claim recorded for this channel and nobody acknowledged (a claim
        whose reply never arrived, for one), then leave the owners registry."""
        client = self.own_client
        ownership.hand_back_owned(self, client, self._token)
        client.zrem(ownership.OWNERS_REGISTRY, self._token)

    def _release_inflight(self) -> None:
        client = self.own_client
        for key in sorted(self._inflight):
            queue = key.split(":", 2)[2]
            while client.lmove(key, queue, "RIGHT", "RIGHT") is not None:
                pass
            client.zrem(INFLIGHT_REGISTRY, key)
        self._inflight.clear()


class _LoopAliveMixin:
    """Tells the channels' heartbeat threads that the event loop turns."""

    cycle: Any

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)  # type: ignore[misc]
        cycle: Any = self.cycle
        old = getattr(cycle, "_cioguard_inflight_tref", None)
        if old is not None:
            old.cancel()
        interval = min((ch.heartbeat_s for ch in cycle._channels), default=1.0)
        cycle._cioguard_inflight_tref = loop.call_repeatedly(interval, self._loop_alive)

    def _loop_alive(self) -> None:
        """Tell the heartbeat threads the event loop turns (they stop vouching when it hangs)."""
        cycle: Any = self.cycle
        for channel in list(cycle._channels):
            channel.loop_alive()


class Transport(_LoopAliveMixin, kombu_redis.Transport):  # type: ignore[misc]
    """Select with ``broker_transport = "cioguard.broker.transport:Transport"`` (see celeryconf)."""

    Channel = ReliableChannel


class ReliableSentinelChannel(ReliableChannel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """The reliable channel on a master found through Redis Sentinel.

    The sentinels come from the ``sentinels`` transport option (``[[host, port], ...]``), not
    from a ``;``-separated URL: kombu takes such a URL's later parts for failover alternates, and
    its ``Connection.switch`` to one of them sets the transport from that URL's scheme, so the
    first reconnect that fails (the master is gone, no replica promoted yet) swaps this channel
    for kombu's own Sentinel channel (BRPOP, no in-flight lists, no heartbeat: the messages this
    channel owned then stay unacknowledged until the visibility timeout). Rotating between
    sentinels is needless anyway: every connect asks all of them for the current master.
    """

    sentinels: list[list[Any]] | None = None
    from_transport_options = (
        *kombu_redis.SentinelChannel.from_transport_options,
        "inflight_stale_after",
        "sentinels",
    )

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        """kombu's pool on the master that ``sentinels`` name (kombu's own if the option is not
        set); redis-py re-asks them for the master on every reconnect."""
        if not self.sentinels:
            return super()._sentinel_managed_pool(asynchronous)
        params = {
            k: v for k, v in self._connparams(asynchronous).items() if k not in ("host", "port")
        }
        manager = Sentinel(  # type: ignore[no-untyped-call]
            [(str(host), int(port)) for host, port in self.sentinels],
            min_other_sentinels=getattr(self, "min_other_sentinels", 0),
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None),
            **params,
        )
        if asynchronous:
            self._async_sentinel_manager = manager  # closed by kombu's _disconnect_pools
        else:
            self._sentinel_manager = manager
        if self.master_name is None:
            raise ValueError("'master_name' transport option must be specified.")
        auth = {k: params[k] for k in ("username", "password") if k in params}
        master: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
            self.master_name, redis.Redis, **auth
        )
        return master.connection_pool


class SentinelTransport(_LoopAliveMixin, kombu_redis.SentinelTransport):  # type: ignore[misc]
    """``sentinel://`` URLs: kombu's Sentinel transport with the reliable channel."""

    Channel = ReliableSentinelChannel


@contextlib.contextmanager
def acks_in_one_round_trip(channel: Any) -> Iterator[None]:
    """:meth:`ReliableQoS.acks_in_one_round_trip` for a message's channel, a no-op on others."""
    qos = getattr(channel, "qos", None)
    if isinstance(qos, ReliableQoS):
        with qos.acks_in_one_round_trip():
            yield
    else:
        yield
