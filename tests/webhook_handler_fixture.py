"""A webhook handler module for the tests, loaded by name via ``CIOGUARD_WEBHOOK_HANDLERS``.

Every call appends ``"<event_id> <metric>"`` to the file named by ``CIOGUARD_TEST_WEBHOOK_LOG``,
so a test in another process (the worker) can count calls. An event whose ``data`` carries
``"fail_handler": true`` makes the handler raise, with the recipient's e-mail in the message, to
prove that such text never reaches logs or the audit table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cioguard.webhooks.verify import on_webhook

LOG_ENV = "CIOGUARD_TEST_WEBHOOK_LOG"


@on_webhook("*")
def record_event(event: dict[str, Any]) -> None:
    path = Path(os.environ[LOG_ENV])
    with path.open("a", encoding="utf-8") as log:
        log.write(f"{event['event_id']} {event['metric']}\n")
    data = event.get("data") or {}
    if data.get("fail_handler"):
        raise ValueError(f"handler refused {data.get('recipient')}")


def calls(path: Path) -> list[str]:
    """The lines written so far (``[]`` before the first call)."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
