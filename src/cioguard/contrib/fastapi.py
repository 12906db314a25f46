"""cioguard in a FastAPI (or Starlette) application: the webhook router and the async API.

::

    from cioguard.contrib.fastapi import AsyncCioguard, cioguard_client, router

    app = FastAPI()
    app.include_router(router())        # POST /webhooks/customerio

    @app.post("/sign-up")
    async def sign_up(cio: AsyncCioguard = Depends(cioguard_client)):
        await cio.identify(user.id, {"email": user.email})

Settings come from the environment (or pass ``settings=``). :func:`router` builds the receiver
at once, so a missing ``CUSTOMERIO_WEBHOOK_SECRET`` or ``CIOGUARD_PAYLOAD_KEY`` stops start-up;
its endpoint is the one ``cioguard webhooks serve`` runs (same checks, dedupe and answers), and
its blocking Redis and broker calls run in Starlette's thread pool. The dependency's methods are
:func:`cioguard.aidentify` and friends: they never block the event loop, and a test overrides
them with ``app.dependency_overrides[cioguard_client]`` or records them with
:func:`cioguard.testing.recording`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from cioguard.config import Settings, get_settings
from cioguard.contrib._webhooks import Receiver
from cioguard.erasure.requests import DeletionStatus
from cioguard.producer import api
from cioguard.producer.api import PersonId
from cioguard.webhooks.app import WEBHOOK_PATH


def router(settings: Settings | None = None, *, path: str = WEBHOOK_PATH) -> APIRouter:
    """An ``APIRouter`` with ``POST path`` receiving Customer.io reporting webhooks."""
    receiver = Receiver(settings or get_settings())
    webhooks = APIRouter()

    @webhooks.post(path, include_in_schema=False)
    async def receive_webhook(request: Request) -> Response:
        return await receiver.endpoint.receive(request)

    return webhooks


class AsyncCioguard:
    """The async API as a dependency: each method awaits the ``cioguard.a*`` function."""

    async def identify(self, person_id: PersonId, attributes: Mapping[str, Any]) -> str:
        return await api.aidentify(person_id, attributes)

    async def track(
        self,
        person_id: PersonId,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        timestamp: int | datetime | None = None,
    ) -> str:
        return await api.atrack(person_id, name, data, timestamp=timestamp)

    async def delete_person(self, person_id: PersonId, *, reason: str = "erasure") -> str:
        return await api.adelete_person(person_id, reason=reason)

    async def deletion_status(self, request_id: str) -> DeletionStatus:
        return await api.adeletion_status(request_id)


_client = AsyncCioguard()


def cioguard_client() -> AsyncCioguard:
    """The FastAPI dependency: ``cio: AsyncCioguard = Depends(cioguard_client)``."""
    return _client


__all__ = ["AsyncCioguard", "cioguard_client", "router"]
