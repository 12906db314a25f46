"""cioguard in a Flask application: ``Cioguard(app)``, settings from ``app.config``, webhooks.

::

    app = Flask(__name__)
    app.config["CIOGUARD_BROKER_URL"] = "redis://localhost:6379/0"
    Cioguard(app)                       # or cio = Cioguard(); cio.init_app(app)

    @app.post("/sign-up")
    def sign_up():
        cioguard.identify(user.id, {"email": user.email})

Settings: the ``app.config`` keys named like cioguard's environment variables (``CIOGUARD_*``,
``CUSTOMERIO_REGION``, ``CUSTOMERIO_WEBHOOK_SECRET``...); **the environment wins** over
``app.config``, as in the Django integration. A ``CIOGUARD_*`` key that is not a cioguard setting
is refused (a typo would otherwise be ignored). One configuration per process: the ``cioguard``
functions are module-level, so the last ``init_app`` wins.

The webhook receiver is a blueprint (:func:`webhook_blueprint`), registered by ``Cioguard(app)``
at ``/webhooks/customerio`` unless ``webhooks=False``; it answers like ``cioguard webhooks serve``.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Blueprint, Flask, current_app, request
from flask.wrappers import Response

from cioguard.config import Settings, load_settings, setting_names
from cioguard.contrib._webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, Answer, Receiver
from cioguard.errors import ConfigurationError
from cioguard.producer import api
from cioguard.webhooks.app import WEBHOOK_PATH

EXTENSION = "cioguard"


class Cioguard:
    """The Flask extension; ``app.extensions["cioguard"]`` once initialised."""

    def __init__(self, app: Flask | None = None, *, webhooks: bool = True) -> None:
        self.webhooks = webhooks
        self.settings: Settings | None = None
        self._receiver: Receiver | None = None
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check the settings now (a bad one stops start-up), point cioguard at them."""
        self.settings = settings_from_config(app.config)
        chosen = self.settings
        api.use_settings(lambda: chosen)
        app.extensions[EXTENSION] = self
        if self.webhooks:
            app.register_blueprint(webhook_blueprint())

    def receiver(self) -> Receiver:
        """The webhook receiver, built on the first delivery (it holds the Redis/broker clients)."""
        with self._lock:
            if self._receiver is None:
                if self.settings is None:
                    raise ConfigurationError("Cioguard.init_app(app) has not run")
                self._receiver = Receiver(self.settings)
            return self._receiver


def settings_from_config(config: Any) -> Settings:
    """cioguard's settings from a Flask config: the environment over the matching keys."""
    known = setting_names()
    for key in config:
        if isinstance(key, str) and key.startswith("CIOGUARD_") and key not in known:
            raise ConfigurationError(f"{key} is not a cioguard setting (see .env.example)")
    return load_settings({key: config[key] for key in known if key in config})


def webhook_blueprint(path: str = WEBHOOK_PATH) -> Blueprint:
    """``POST path``: verify, dedupe, enqueue Customer.io reporting webhooks."""
    blueprint = Blueprint("cioguard_webhooks", __name__)

    @blueprint.post(path)
    def receive() -> Response:
        extension: Cioguard = current_app.extensions[EXTENSION]
        try:
            receiver = extension.receiver()
        except ConfigurationError:
            return _response(Answer(503, {"error": "unavailable"}))
        if receiver.too_large(request.headers.get("Content-Length")):
            return _response(Answer(413, {"error": "payload too large"}))
        body = request.stream.read(receiver.max_body_bytes + 1)  # bounded even when chunked
        answer = receiver.receive(
            body,
            timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
            signature=request.headers.get(SIGNATURE_HEADER, ""),
        )
        return _response(answer)

    return blueprint


def _response(answer: Answer) -> Response:
    return Response(answer.json(), status=answer.status, mimetype="application/json")


__all__ = ["Cioguard", "settings_from_config", "webhook_blueprint"]
