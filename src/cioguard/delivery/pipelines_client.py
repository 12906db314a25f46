"""The Customer.io Data Pipelines API boundary: a quiet, classified HTTP client.

Why not ``customerio-cdp-analytics`` (Customer.io's official Python client for this API, a fork
of Segment's analytics-python): it puts calls on an in-memory queue that a background thread
flushes, so

* durability: what is queued when the process dies (kill -9, OOM) is lost, while cioguard acks a
  job only after Customer.io has answered for it;
* per-item outcomes: the caller never learns the fate of one call (errors go to an ``on_error``
  callback for a whole flush, after retries the library does itself with backoff sleeps), so a
  job cannot be settled, retried or dead-lettered on its own;
* batching control: the library batches by its own count and size rules (measured on its own
  serialization) and sends no ``X-Strict-Mode`` header, so an invalid call answers 200 and is
  dropped; cioguard must size on the exact bytes it sends because an over-limit request is
  also answered 200 and dropped.

Its ``sync_mode`` removes the thread but keeps the library's own batching and retries, and still
gives no per-call answer. The wire format is small and documented (Basic auth with the source's
key and an empty password, JSON bodies, ``/v1/identify``, ``/v1/track``, ``/v1/batch``), so this
module sends it itself with ``requests`` (the HTTP library cioguard already uses), through the
same classification as the Track client (:func:`cioguard.delivery.customerio._classify`): no
retries inside the call, nothing of the request (URL, body) in an error message.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from cioguard.config import Settings
from cioguard.delivery.credentials import Credentials
from cioguard.delivery.customerio import _classify, _transport_error

US_URL = "https://cdp.customer.io"
EU_URL = "https://cdp-eu.customer.io"
STRICT_MODE = {"X-Strict-Mode": "1"}  # validation failures answer 400/401, never a silent 200
CHECK_BODY = b'{"batch":[]}'


class PipelinesClient:
    """Pipelines API calls used by the worker. One per worker process (pooled session)."""

    def __init__(
        self,
        *,
        api_key: str,
        region: str = "us",
        base_url: str | None = None,
        ca_bundle: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.root = _root(region, base_url)
        self.region = region
        self.timeout_s = timeout_s
        self.ca_bundle: str | bool = ca_bundle or True
        self._api_key = api_key
        self._session: requests.Session | None = None

    @classmethod
    def from_settings(cls, settings: Settings, creds: Credentials) -> PipelinesClient:
        """The client for these settings (region, URL override, CA bundle, timeout)."""
        return cls(
            api_key=creds.api_key,
            region=settings.region,
            base_url=settings.pipelines_url,
            ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
            timeout_s=settings.http_timeout_s,
        )

    def _http(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "cioguard (pipelines)"
            session.headers.update(STRICT_MODE)
            session.mount("https://", HTTPAdapter(max_retries=0, pool_maxsize=4))
            session.auth = (self._api_key, "")
            self._session = session
        return self._session

    def url(self, endpoint: str) -> str:
        """``{root}/v1/{endpoint}`` (``identify``, ``track`` or ``batch``)."""
        return f"{self.root}/v1/{endpoint}"

    def send(self, op: str, endpoint: str, body: bytes) -> requests.Response:
        """POST ``body`` as is (the exact bytes that were sized) to ``endpoint``, classified.

        A transport error is raised outside the ``except`` block so it has no ``__context__``
        (requests' message holds the URL)."""
        headers = {"Content-Type": "application/json"}
        try:
            response = self._http().post(
                self.url(endpoint), data=body, headers=headers, timeout=self.timeout_s,
                verify=self.ca_bundle,  # per request: a session's verify loses to the env
            )  # fmt: skip
        except requests.RequestException as exc:
            failure = _transport_error(op, exc)
        else:
            return _classify(op, response)
        raise failure

    def check(self) -> int:
        """Verify the key: ``POST /v1/batch`` of an empty batch, in strict mode.

        The API has no read endpoint; an empty batch is the cheapest authenticated call that
        writes nothing (no person, no event). Raises CredentialsError on 401/403."""
        return self.send("pipelines check", "batch", CHECK_BODY).status_code

    def use_credentials(self, site_id: str, api_key: str) -> None:
        """Switch to a rotated key (``site_id`` is unused: a Pipelines key stands alone)."""
        self._api_key = api_key
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _root(region: str, base_url: str | None) -> str:
    if not base_url:
        return EU_URL if region == "eu" else US_URL
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("CIOGUARD_PIPELINES_URL: expected an https:// URL")
    return base_url.rstrip("/")
