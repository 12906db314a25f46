"""An application's own Celery app, as a Django/Flask project writes it, for the isolation test.

It is created first and becomes Celery's current app (the default), and its tasks use
``@shared_task`` (the form Django projects use) and ``@app.task``. Each task appends a line to the
Redis list ``hostapp:done`` so the test, in another process, sees which worker ran it. With
``HOSTAPP_IMPORT_CIOGUARD_WORKER=1`` the module also imports ``cioguard.worker`` (and so builds
cioguard's worker app and connects its signals) in the application's worker process.
"""

from __future__ import annotations

import os

import redis
from celery import Celery, shared_task

QUEUE = "hostapp"
DONE = "hostapp:done"

app = Celery("hostapp")
app.conf.update(
    broker_url=os.environ["HOSTAPP_BROKER_URL"],
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


def _done(line: str) -> None:
    client = redis.Redis.from_url(os.environ["HOSTAPP_BROKER_URL"])
    client.rpush(DONE, line)
    client.close()


@shared_task(name="hostapp.send_welcome_email")
def send_welcome_email(user_id: int) -> None:
    _done(f"send_welcome_email {user_id}")


@app.task(name="hostapp.bill")
def bill(user_id: int) -> None:
    _done(f"bill {user_id}")


if os.environ.get("HOSTAPP_IMPORT_CIOGUARD_WORKER") == "1":
    import cioguard.worker  # noqa: F401
