"""Bulk erasure: a file of person ids in, one deletion request per distinct id out.

Three steps, each usable on its own (``cioguard delete --file`` wires them to progress bars):

1. :func:`parse_ids` validates every line before anything is recorded. A bad line is reported
   by its number and the problem, never its content (it is a person id, or a typo of one);
   the good lines go on.
2. :func:`submit` opens the requests in chunks (one transaction per chunk, bulk inserts) and
   enqueues one erase job per new request. An id that already has an open or completed request
   gets no second one, so re-running the same file is safe; a request still ``received`` from
   an interrupted run is enqueued again (its job id is the same, so the worker does it once).
3. :func:`wait` polls the requests' states until none is open (or a deadline passes).

Note: ids repeated within the file count as duplicates once each; an id whose previous request
failed gets a new request (asking again is how a failure is retried).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cioguard.erasure import opening
from cioguard.erasure import requests as deletions
from cioguard.errors import InvalidInputError, InvalidTypeError
from cioguard.privacy.hashing import person_hash
from cioguard.producer import validate
from cioguard.producer.api import Producer

CHUNK = 500
Progress = Callable[[int], None]


@dataclass(frozen=True)
class BadLine:
    """A line that is not a valid person id: its 1-based number and what is wrong with it."""

    line_no: int
    problem: str


@dataclass(frozen=True)
class ParsedIds:
    """Valid ids with their line numbers, bad lines, and how many blank lines were skipped."""

    ids: list[tuple[int, str]]
    bad: list[BadLine]
    blank: int


def parse_ids(lines: Iterable[bytes]) -> ParsedIds:
    """Validate one id per line (UTF-8; the line ending is not part of the id)."""
    ids: list[tuple[int, str]] = []
    bad: list[BadLine] = []
    blank = 0
    for line_no, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if not line:
            blank += 1
            continue
        try:
            ids.append((line_no, validate.person_id(line.decode("utf-8"))))
        except UnicodeDecodeError:
            bad.append(BadLine(line_no, "not valid UTF-8"))
        except (InvalidInputError, InvalidTypeError) as exc:
            bad.append(BadLine(line_no, str(exc)))  # validate's messages never echo the value
    return ParsedIds(ids, bad, blank)


@dataclass
class Submitted:
    """What :func:`submit` did. ``request_ids`` holds each distinct request once."""

    new: int = 0
    resumed: int = 0
    already: int = 0
    repeated_in_file: int = 0
    request_ids: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Ids that did not open a new request: repeated in the file or requested before."""
        return self.already + self.resumed + self.repeated_in_file


def submit(
    producer: Producer,
    ids: Sequence[str],
    *,
    reason: str = "erasure",
    manner: str = "bulk",
    chunk: int = CHUNK,
    on_progress: Progress | None = None,
) -> Submitted:
    """Open (or reuse) a request per id and enqueue the new ones. Ids must be validated.

    Raises :class:`~cioguard.errors.BrokerUnavailableError` if Redis stops answering: the
    requests recorded so far stay ``received`` and are enqueued by the next run of the same ids.
    """
    why = validate.reason(reason)
    result = Submitted()
    seen: set[str] = set()
    for start in range(0, len(ids), chunk):
        batch = ids[start : start + chunk]
        hashes = [person_hash(producer.hash_key, pid) for pid in batch]
        opened = opening.open_requests(
            producer.audit, hashes, reason=why, manner=manner,
            mode=producer.settings.deletion_mode,
            seal=producer.erase_sealer(dict(zip(hashes, batch, strict=True))),
        )  # fmt: skip
        for pid, hashed, request in zip(batch, hashes, opened, strict=True):
            _count_and_send(producer, result, seen, pid, hashed, request)
        if on_progress is not None:
            on_progress(len(batch))
    return result


def _count_and_send(
    producer: Producer,
    result: Submitted,
    seen: set[str],
    pid: str,
    hashed: str,
    request: opening.OpenedRequest,
) -> None:
    if hashed in seen:
        result.repeated_in_file += 1
        return
    seen.add(hashed)
    result.request_ids.append(request.request_id)
    if request.created:
        result.new += 1
    elif request.state == "received":
        result.resumed += 1
    else:
        result.already += 1
        return
    producer.publish_erasure(request, pid)


def wait(
    producer: Producer,
    request_ids: Sequence[str],
    *,
    timeout_s: float,
    poll_s: float = 1.0,
    on_progress: Callable[[Counter[str]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Counter[str]:
    """Poll until no request is open or ``timeout_s`` passes; returns the count per state."""
    deadline = clock() + timeout_s
    while True:
        counts = Counter(deletions.states(producer.audit, request_ids).values())
        if on_progress is not None:
            on_progress(counts)
        if not any(counts[s] for s in deletions.OPEN_STATES) or clock() >= deadline:
            return counts
        sleep(poll_s)
