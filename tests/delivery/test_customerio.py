"""The Customer.io boundary against the TLS sandbox: how every answer is classified, and that no
error carries a person id or a payload, in its message or in any chained exception.
"""

from __future__ import annotations

import email.utils
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from cioguard.delivery.customerio import TrackClient, _classify, parse_retry_after
from cioguard.errors import CredentialsError, DeliveryError, PermanentError, RetryableError
from cioguard.sandbox.client import SandboxServer
from cioguard.sandbox.devstack import free_port
from cioguard.sandbox.state import FaultConfig

PERSON = "pii-canary-person-7f3a"
EMAIL = "canary-7f3a@example.com"
SECRET_DATA = "canary-data-7f3a"
CANARIES = (PERSON, EMAIL, SECRET_DATA, "7f3a")


@pytest.fixture(autouse=True)
def clean(sandbox: SandboxServer) -> Iterator[None]:
    """Faults and credentials outlive ``reset``: put both back before and after each test."""
    sandbox.control.configure(**FaultConfig().as_dict())
    sandbox.control.set_credentials([(sandbox.site_id, sandbox.api_key)])
    sandbox.control.reset()
    yield
    sandbox.control.configure(**FaultConfig().as_dict())
    sandbox.control.set_credentials([(sandbox.site_id, sandbox.api_key)])


def make_client(
    sandbox: SandboxServer, *, base_url: str | None = None, timeout_s: float = 5.0, **kw: Any
) -> TrackClient:
    options: dict[str, Any] = {
        "site_id": sandbox.site_id,
        "api_key": sandbox.api_key,
        "base_url": base_url or sandbox.url,
        "ca_bundle": str(sandbox.ca_path),
        "timeout_s": timeout_s,
    }
    return TrackClient(**{**options, **kw})


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[TrackClient]:
    track = make_client(sandbox)
    yield track
    track.close()


CALLS: dict[str, Callable[[TrackClient], int]] = {
    "identify": lambda c: c.identify(PERSON, {"email": EMAIL, "note": SECRET_DATA}),
    "track": lambda c: c.track(
        PERSON, "paid", {"secret": SECRET_DATA}, event_id="01HZX3K5Q8M2N4P6R8T0V2W4Y6"
    ),
    "delete": lambda c: c.delete(PERSON),
    "suppress": lambda c: c.suppress(PERSON),
}


def renderings(exc: BaseException) -> Iterator[str]:
    """Every text a log line, Sentry or a result backend could make of ``exc`` and its chain,
    including a ``__context__`` that ``raise ... from None`` only hides from tracebacks."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield "".join(traceback.format_exception(current))
        pending += [current.__cause__, current.__context__]


def assert_no_pii(exc: BaseException) -> None:
    for text in renderings(exc):
        for canary in CANARIES:
            assert canary not in text, f"{canary!r} leaked in {type(exc).__name__}: {text[:300]}"


def raised(call: Callable[[], object]) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        call()
    return info.value


# -- success ------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(CALLS))
def test_2xx_returns_the_status(sandbox: SandboxServer, client: TrackClient, op: str) -> None:
    assert CALLS[op](client) == 200


def test_identify_and_track_reach_the_api_with_the_event_id(
    sandbox: SandboxServer, client: TrackClient
) -> None:
    CALLS["identify"](client)
    CALLS["track"](client)
    assert sandbox.control.person(PERSON) == {"email": EMAIL, "note": SECRET_DATA}
    assert [e["id"] for e in sandbox.control.events(PERSON)] == ["01HZX3K5Q8M2N4P6R8T0V2W4Y6"]


def test_check_region_returns_the_account_region(client: TrackClient) -> None:
    assert client.check_region() == "us"


# -- classification -----------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["identify", "track"])
def test_400_is_permanent(sandbox: SandboxServer, client: TrackClient, op: str) -> None:
    sandbox.control.configure(reject_id_prefix="pii-canary")
    exc = raised(lambda: CALLS[op](client))
    assert type(exc) is PermanentError and exc.status == 400
    assert_no_pii(exc)


@pytest.mark.parametrize("op", list(CALLS))
def test_401_is_a_credentials_error(sandbox: SandboxServer, client: TrackClient, op: str) -> None:
    sandbox.control.set_credentials([("other-site", "other-key")])
    exc = raised(lambda: CALLS[op](client))
    assert isinstance(exc, CredentialsError) and isinstance(exc, PermanentError)
    assert exc.status == 401
    assert_no_pii(exc)


def test_401_on_the_region_check(sandbox: SandboxServer, client: TrackClient) -> None:
    sandbox.control.set_credentials([("other-site", "other-key")])
    exc = raised(client.check_region)
    assert isinstance(exc, CredentialsError) and exc.status == 401


def test_use_credentials_switches_the_pair(sandbox: SandboxServer, client: TrackClient) -> None:
    sandbox.control.set_credentials([("site-2", "key-2")])
    with pytest.raises(CredentialsError):
        CALLS["identify"](client)
    client.use_credentials("site-2", "key-2")
    assert CALLS["identify"](client) == 200


@pytest.mark.parametrize("op", list(CALLS))
def test_5xx_is_retryable_without_retry_after(
    sandbox: SandboxServer, client: TrackClient, op: str
) -> None:
    sandbox.control.configure(fail_5xx_ratio=1.0)
    exc = raised(lambda: CALLS[op](client))
    assert type(exc) is RetryableError
    assert exc.status in (500, 502, 503) and exc.retry_after_s is None
    assert_no_pii(exc)


@pytest.mark.parametrize("op", list(CALLS))
def test_429_is_retryable_with_retry_after(
    sandbox: SandboxServer, client: TrackClient, op: str
) -> None:
    sandbox.control.configure(fail_429_ratio=1.0, retry_after_s=7)
    exc = raised(lambda: CALLS[op](client))
    assert type(exc) is RetryableError
    assert exc.status == 429 and exc.retry_after_s == 7.0
    assert_no_pii(exc)


def test_strict_rate_429_is_retryable(sandbox: SandboxServer, client: TrackClient) -> None:
    sandbox.control.configure(strict_rate_per_s=0.001, strict_burst=1)
    assert CALLS["identify"](client) == 200
    exc = raised(lambda: CALLS["identify"](client))
    assert isinstance(exc, RetryableError) and exc.status == 429 and exc.retry_after_s == 1.0
    assert sandbox.control.stats()["over_limit"] == 1


@pytest.mark.parametrize("op", ["identify", "track"])
def test_404_is_permanent_for_writes(sandbox: SandboxServer, op: str) -> None:
    client = make_client(sandbox, base_url=f"{sandbox.url}/no-such-prefix")
    exc = raised(lambda: CALLS[op](client))
    assert type(exc) is PermanentError and exc.status == 404
    assert_no_pii(exc)


@pytest.mark.parametrize("op", ["delete", "suppress"])
def test_404_counts_as_done_for_delete_and_suppress(sandbox: SandboxServer, op: str) -> None:
    client = make_client(sandbox, base_url=f"{sandbox.url}/no-such-prefix")
    assert CALLS[op](client) == 404


@pytest.mark.parametrize("op", list(CALLS))
def test_timeout_is_retryable(sandbox: SandboxServer, op: str) -> None:
    sandbox.control.configure(slow_ratio=1.0, slow_s=1.5)
    client = make_client(sandbox, timeout_s=0.3)
    exc = raised(lambda: CALLS[op](client))
    assert type(exc) is RetryableError and exc.status is None
    assert "in time" in str(exc)
    assert_no_pii(exc)
    time.sleep(1.6)  # the stand-in applies the slow op late: let it land before the next test


@pytest.mark.parametrize("op", list(CALLS))
def test_connection_refused_is_retryable(sandbox: SandboxServer, op: str) -> None:
    client = make_client(sandbox, base_url=f"https://127.0.0.1:{free_port()}")
    exc = raised(lambda: CALLS[op](client))
    assert type(exc) is RetryableError and exc.status is None
    assert "unreachable" in str(exc) and "ConnectionError" in str(exc)
    assert_no_pii(exc)


def test_connection_refused_on_the_region_check_is_retryable(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, base_url=f"https://127.0.0.1:{free_port()}")
    exc = raised(client.check_region)
    assert isinstance(exc, RetryableError) and exc.status is None
    assert_no_pii(exc)


def test_an_untrusted_certificate_is_refused(sandbox: SandboxServer) -> None:
    client = make_client(sandbox, ca_bundle=None)
    exc = raised(lambda: CALLS["identify"](client))
    assert isinstance(exc, RetryableError) and "SSLError" in str(exc)
    assert_no_pii(exc)


def test_faults_left_no_trace_of_the_person_in_the_messages(
    sandbox: SandboxServer, client: TrackClient
) -> None:
    """Across mixed faults, every error message is one of the fixed forms."""
    sandbox.control.configure(fail_5xx_ratio=0.5, fail_429_ratio=0.3, seed=3)
    seen: set[str] = set()
    for _ in range(30):
        try:
            CALLS["track"](client)
        except DeliveryError as exc:
            assert_no_pii(exc)
            seen.add(type(exc).__name__)
    assert seen == {"RetryableError"}


# -- classification of statuses the sandbox does not produce ------------------------------------


def response(status: int, headers: dict[str, str] | None = None) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer.headers.update(headers or {})
    answer.url = f"https://track.customer.io/api/v1/customers/{PERSON}"
    answer._content = f'{{"meta": {{"error": "{EMAIL}"}}}}'.encode()
    return answer


@pytest.mark.parametrize(
    ("status", "error"),
    [(408, RetryableError), (500, RetryableError), (504, RetryableError), (403, CredentialsError),
     (413, PermanentError), (422, PermanentError)],
)  # fmt: skip
def test_status_classes(status: int, error: type[DeliveryError]) -> None:
    with pytest.raises(DeliveryError) as info:
        _classify("identify", response(status))
    assert type(info.value) is error and info.value.status == status
    assert_no_pii(info.value)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_passes_through(status: int) -> None:
    assert _classify("identify", response(status)).status_code == status


def test_503_with_retry_after_carries_it() -> None:
    with pytest.raises(RetryableError) as info:
        _classify("track", response(503, {"Retry-After": "120"}))
    assert info.value.retry_after_s == 120.0


# -- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), (" 30 ", 30.0), ("0", 0.0), (None, None), ("", None), ("soon", None),
     ("-3", None), ("1.5", None)],
)  # fmt: skip
def test_parse_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 60, usegmt=True)
    parsed = parse_retry_after(when)
    assert parsed is not None and 55 <= parsed <= 61


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
