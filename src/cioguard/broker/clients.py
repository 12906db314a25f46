"""A redis-py client for any broker URL cioguard supports, Redis Sentinel included.

``redis://`` and ``rediss://`` go to ``redis.Redis.from_url`` (so ``?ssl_ca_certs=/path/ca.pem``
and the other redis-py query options work as documented there; ``rediss://`` verifies the
certificate unless ``ssl_cert_reqs=none`` is set, which ``cioguard check`` warns about).

``sentinel://`` lists the sentinels, ``;``-separated as kombu and Celery write them, with the
database on the first and the monitored master's name as ``master_name`` in the query::

    sentinel://:PASSWORD@s1:26379/0;sentinel://s2:26379;sentinel://s3:26379?master_name=mymaster

The password (on the first sentinel) is the master's; the sentinels themselves are reached
without one. The client asks the sentinels for the current master on every reconnect, so a
failover is followed (redis-py's ``Sentinel.master_for``). The same form is used by the worker's
transport (:class:`cioguard.broker.transport.SentinelTransport`) through :func:`sentinel_parts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SCHEMES = ("redis", "rediss", "sentinel")


@dataclass(frozen=True)
class SentinelParts:
    sentinels: list[tuple[str, int]]
    master_name: str
    db: int
    password: str | None
    kombu_url: str
    """The first sentinel's URL without the query, as kombu takes it: the master's name and every
    sentinel go in transport options (see :class:`cioguard.broker.transport.SentinelTransport`
    for why kombu never sees the other sentinels' URLs)."""


def sentinel_parts(url: str) -> SentinelParts:
    """Split a ``sentinel://`` URL; ``ValueError`` names what is missing (never the value)."""
    pieces = [p for p in url.split(";") if p]
    if not pieces or any(urlsplit(p).scheme != "sentinel" for p in pieces):
        raise ValueError("every part of a sentinel URL must be sentinel://host:port")
    sentinels: list[tuple[str, int]] = []
    master_name: str | None = None
    for piece in pieces:
        parts = urlsplit(piece)
        if not parts.hostname:
            raise ValueError("a sentinel URL part has no host")
        sentinels.append((parts.hostname, parts.port or 26379))
        names = parse_qs(parts.query).get("master_name")
        if names:
            master_name = names[0]
    if not master_name:
        raise ValueError("a sentinel URL needs ?master_name=NAME (the master the sentinels watch)")
    first = urlsplit(pieces[0])
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("the database of a sentinel URL must be a number")
    kombu_url = pieces[0].split("?", 1)[0]
    password = unquote(first.password) if first.password else None
    return SentinelParts(sentinels, master_name, int(path or 0), password, kombu_url)


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``sentinel://``); ``kwargs`` are
    redis-py connection options (timeouts, retry, health checks)."""
    if urlsplit(url).scheme != "sentinel":
        return redis.Redis.from_url(url, **kwargs)
    parts = sentinel_parts(url)
    timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    sentinel = Sentinel(parts.sentinels, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parts.master_name, db=parts.db, password=parts.password, **kwargs
    )
    return client
