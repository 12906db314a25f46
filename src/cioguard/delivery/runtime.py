"""The worker process's shared clients, built once per process and reused by every task.

Redis, the audit engine, the HTTP session and the limiter are expensive to build and hold
connections; building them per task would dominate the cost of a job. They are created lazily on
first use in each process (after the pool forks, so no socket is shared between processes).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from cioguard.audit.store import AuditStore
from cioguard.broker.envelope import Envelope
from cioguard.config import Settings, get_settings
from cioguard.delivery.credentials import CredentialSource, source_from_spec
from cioguard.delivery.customerio import TrackClient
from cioguard.delivery.destination import Destination
from cioguard.delivery.ratelimit import RateLimiter
from cioguard.delivery.ratelimit_backends import redis_limiter
from cioguard.delivery.track_api import TrackApi
from cioguard.erasure.tombstones import Tombstones
from cioguard.privacy.hashing import person_hash
from cioguard.privacy.policy import load_policy
from cioguard.privacy.sanitizer import Sanitizer


@dataclass
class Runtime:
    settings: Settings
    envelope: Envelope
    sanitizer: Sanitizer
    policy_version: str
    audit: AuditStore
    redis: redis.Redis
    tombstones: Tombstones
    limiter: RateLimiter
    credentials: CredentialSource
    client: TrackClient
    destination: Destination

    def person_hash(self, person_id: str) -> str:
        return person_hash(self.settings.hash_key_bytes(), person_id)

    def refresh_credentials(self) -> None:
        """Re-read the secret source (after a 401) and point the client at the new pair."""
        creds = self.credentials.refresh()
        self.client.use_credentials(creds.site_id, creds.api_key)


def build_runtime(settings: Settings) -> Runtime:
    policy = load_policy(settings.policy_path)
    redis_client = redis.Redis.from_url(
        settings.broker_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 2),  # fail in ~2 s, the task retries
    )  # fmt: skip
    audit = AuditStore.from_url(settings.audit_url)
    credentials = source_from_spec(settings.secrets_source)
    creds = credentials.get()
    client = TrackClient.from_settings(settings, creds)
    return Runtime(
        settings=settings,
        envelope=Envelope(settings.payload_keys()),
        sanitizer=Sanitizer(policy, settings.hash_key_bytes()),
        policy_version=policy.version,
        audit=audit,
        redis=redis_client,
        tombstones=Tombstones(redis_client, audit),
        limiter=redis_limiter(
            redis_client, "track", rate_per_s=settings.rate_limit_per_s, burst=settings.burst
        ),
        credentials=credentials,
        client=client,
        destination=TrackApi(client),
    )


@functools.lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    """This process's runtime (built on first use)."""
    return build_runtime(get_settings())


os.register_at_fork(after_in_child=get_runtime.cache_clear)
