"""The Customer.io boundary: the official ``customerio`` client, made quiet and classified.

``customerio.CustomerIO`` builds URLs, encodes ids and shapes event bodies; we keep all of that.
We replace two things:

* its session: no urllib3 retries (it retries POSTs on 5xx, doubling events, and sleeps inside
  the call on a 429 for as long as Retry-After says), and our CA bundle;
* its ``send_request``: instead of one ``CustomerIOException`` whose text carries the URL (with
  the person id) and the request body, every non-2xx answer becomes one of our errors with only
  the operation name, the HTTP status and Retry-After.

Third-party exceptions are raised ``from None`` here on purpose: their text (requests' URLs,
the package's message) contains person ids, and a chained ``__cause__`` would carry it to logs
and Sentry.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from customerio import CustomerIO, Regions
from requests.adapters import HTTPAdapter

from cioguard.config import Settings
from cioguard.delivery.credentials import Credentials
from cioguard.delivery.destination import BatchResult
from cioguard.errors import CredentialsError, PermanentError, RetryableError
from cioguard.ops import metrics

RETRYABLE_STATUSES = frozenset({408, 429})
DONE_ON_404 = frozenset({"delete", "suppress"})


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON: the bytes that are sized are the bytes that are sent.

    ``requests``' ``json=`` escapes non-ASCII text (up to 12 bytes per character) and adds
    spaces, so a body sized any other way can be twice as large on the wire.
    """
    return _ENCODE(value).encode()


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""``json.dumps`` with these options builds an encoder per call; :func:`dumps` keeps one."""


BATCH_ENVELOPE_BYTES = len(b'{"batch":[]}')


def batch_body(operations: Sequence[bytes]) -> bytes:
    """``{"batch":[...]}`` around already serialized operations (size: envelope + ops + commas)."""
    return b'{"batch":[' + b",".join(operations) + b"]}"


class _QuietCustomerIO(CustomerIO):  # type: ignore[misc]
    """The official client with our session and our error classification."""

    operation = "request"
    ca_bundle: str | bool = True

    def _build_session(self) -> requests.Session:
        session = requests.Session()
        session.headers["User-Agent"] = "cioguard (customerio-python)"
        session.mount("https://", HTTPAdapter(max_retries=0, pool_maxsize=4))
        session.auth = (self.site_id, self.api_key)
        session.verify = self.ca_bundle
        return session

    def send_request(self, method: str, url: str, data: Mapping[str, Any]) -> requests.Response:
        return self.call(method, url, json=self._sanitize(data))

    def call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request, classified. A transport error is raised outside the ``except`` block so
        it has no ``__context__``: requests' message holds the URL, with the person id."""
        op = self.operation
        try:
            response = self.http.request(
                method, url=url, timeout=self.timeout, verify=self.ca_bundle, **kwargs
            )  # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE
        except requests.RequestException as exc:
            failure = _transport_error(op, exc)
        else:
            return _classify(op, response)
        raise failure


def _transport_error(op: str, exc: requests.RequestException) -> RetryableError:
    metrics.response(op, None)
    if isinstance(exc, requests.Timeout):
        return RetryableError(f"Customer.io did not answer {op} in time")
    return RetryableError(f"Customer.io unreachable for {op} ({type(exc).__name__})")


def _classify(op: str, response: requests.Response) -> requests.Response:
    status = response.status_code
    metrics.response(op, status)
    if 200 <= status < 300 or (status == 404 and op in DONE_ON_404):
        return response
    if status in RETRYABLE_STATUSES or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise RetryableError(
            f"Customer.io answered {status} to {op}", status=status, retry_after_s=retry_after
        )
    if status in (401, 403):
        raise CredentialsError(
            f"Customer.io refused the credentials ({status}) for {op}", status=status
        )
    raise PermanentError(f"Customer.io rejected {op} with {status}", status=status)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class TrackClient:
    """Customer.io Track API calls used by the worker. One per worker process (pooled session)."""

    def __init__(
        self,
        *,
        site_id: str,
        api_key: str,
        region: str = "us",
        base_url: str | None = None,
        ca_bundle: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        host, port, prefix = _endpoint(region, base_url)
        self._cio = _QuietCustomerIO(
            site_id=site_id,
            api_key=api_key,
            host=host,
            port=port,
            url_prefix=prefix,
            region=Regions.EU if region == "eu" else Regions.US,
            retries=0,
            timeout=timeout_s,
        )
        self._cio.ca_bundle = ca_bundle or True
        self.region = region

    @classmethod
    def from_settings(cls, settings: Settings, creds: Credentials) -> TrackClient:
        """The client for these settings (region, URL override, CA bundle, timeout)."""
        return cls(
            site_id=creds.site_id,
            api_key=creds.api_key,
            region=settings.region,
            base_url=settings.track_url,
            ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
            timeout_s=settings.http_timeout_s,
        )

    def send(self, op: str, method: str, url: str, body: bytes | None) -> requests.Response:
        """One request with ``body`` sent as is (the exact bytes that were sized), classified."""
        self._cio.operation = op
        headers = {"Content-Type": "application/json"} if body is not None else None
        response: requests.Response = self._cio.call(method, url, data=body, headers=headers)
        return response

    def v1_url(self, person_id: str, suffix: str = "") -> str:
        """``/api/v1/customers/{id}[/suffix]``, the id percent-encoded by the official client."""
        url = str(self._cio.get_customer_query_string(person_id))
        return f"{url}/{suffix}" if suffix else url

    def v2_url(self, endpoint: str) -> str:
        """``/api/v2/{endpoint}`` on the Track host."""
        root = self._cio.base_url.rsplit("/api/v1", 1)[0]
        return f"{root}/api/v2/{endpoint}"

    def identify(self, person_id: str, attributes: Mapping[str, Any]) -> int:
        """``PUT /api/v1/customers/{id}``; attributes travel as a mapping (any name, ``id`` too)."""
        body = dumps(dict(attributes))
        return self.send("identify", "PUT", self.v1_url(person_id), body).status_code

    def track(
        self,
        person_id: str,
        name: str,
        data: Mapping[str, Any] | None,
        *,
        event_id: str,
        timestamp: int | None = None,
    ) -> int:
        """``POST /api/v1/customers/{id}/events`` with a deduplicating event id."""
        event: dict[str, Any] = {"name": name, "data": dict(data or {}), "id": event_id}
        if timestamp is not None:
            event["timestamp"] = timestamp
        url = self.v1_url(person_id, "events")
        return self.send("track", "POST", url, dumps(event)).status_code

    def delete(self, person_id: str) -> int:
        """``DELETE /api/v1/customers/{id}``; 404 counts as done."""
        return self.send("delete", "DELETE", self.v1_url(person_id), None).status_code

    def suppress(self, person_id: str) -> int:
        """``POST /api/v1/customers/{id}/suppress``: deletes and blocks the id; 404 is done."""
        url = self.v1_url(person_id, "suppress")
        return self.send("suppress", "POST", url, None).status_code

    def batch(self, operations: Sequence[Mapping[str, Any]]) -> BatchResult:
        """``POST /api/v2/batch`` of ``operations`` (serialized here)."""
        return self.post_batch(batch_body([dumps(dict(op)) for op in operations]))

    def post_batch(self, body: bytes) -> BatchResult:
        """``POST /api/v2/batch`` with a body built by :func:`batch_body`; a 207 lists the
        refused operations by index."""
        response = self.send("batch", "POST", self.v2_url("batch"), body)
        failed: dict[int, str] = {}
        if response.status_code == 207:
            for error in response.json().get("errors", []):
                failed[int(error.get("batch_index", -1))] = str(error.get("reason", "invalid"))
        return BatchResult(status=response.status_code, failed=failed)

    def check_region(self) -> str:
        """``GET /api/v1/accounts/region``: verifies credentials, returns the account region."""
        self._cio.operation = "region check"
        url = f"{self._cio.base_url}/accounts/region"
        response = self._cio.call("GET", url)
        return str(response.json().get("region", ""))

    def use_credentials(self, site_id: str, api_key: str) -> None:
        """Switch to rotated credentials; the next request builds a new session."""
        self._cio.site_id, self._cio.api_key = site_id, api_key
        self._cio.close()

    def close(self) -> None:
        self._cio.close()


def _endpoint(region: str, base_url: str | None) -> tuple[str, int, str | None]:
    if not base_url:
        host = Regions.EU.track_host if region == "eu" else Regions.US.track_host
        return host, 443, None
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("CIOGUARD_TRACK_URL: expected an https:// URL")
    path = parts.path.rstrip("/")
    return parts.hostname, parts.port or 443, f"{path}/api/v1" if path else None
