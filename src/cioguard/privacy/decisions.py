"""What :meth:`~cioguard.privacy.sanitizer.Sanitizer.explain` reports: one decision per key.

Split from :mod:`.sanitizer` (which re-exports :class:`Decision`). A decision carries a path, an
action, the rule or detector and why, never a value: values may be personal data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from cioguard.privacy import detectors

DecisionAction = Literal["keep", "drop", "hash", "redact", "allowlist-drop", "detector-redact"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What happened at one path (``profile.cards[0].number``), by which rule, and why."""

    path: str
    action: DecisionAction
    rule: str | None
    reason: str
    library: str = ""  # what decided: "policy (<match kind>)" or the detector's library


def log_spans(log: list[Decision], path: str, spans: list[detectors.Span]) -> None:
    """One decision per detector that matched in the text at ``path``, with its count."""
    for name, count in Counter(span.detector for span in spans).items():
        reason = f"{count} {name} match(es) replaced in the text"
        library = detectors.LIBRARIES[name]
        log.append(Decision(path, "detector-redact", f"detector:{name}", reason, library))
