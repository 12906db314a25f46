"""`cioguard webhooks` commands: serve the Customer.io reporting-webhook intake.

Registered by :mod:`cioguard.cli.main`. The command builds the app from settings
(:func:`cioguard.webhooks.intake.app_from_settings`) and serves it with uvicorn; a configuration
error prints one line naming the variable and exits 2, never a traceback.
"""

from __future__ import annotations

import typer

webhooks_app = typer.Typer(no_args_is_help=True, help="Customer.io reporting webhooks.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to bind (0.0.0.0 behind a proxy)"),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
) -> None:
    """Receive reporting webhooks on POST /webhooks/customerio: verify, dedupe, enqueue.

    Needs CUSTOMERIO_WEBHOOK_SECRET, CIOGUARD_PAYLOAD_KEY and CIOGUARD_BROKER_URL. Handlers run in
    `cioguard worker` (CIOGUARD_WEBHOOK_HANDLERS), not here.
    """
    from cioguard.cli._common import err, guarded
    from cioguard.config import get_settings
    from cioguard.ops.observability import init_process
    from cioguard.webhooks.app import WEBHOOK_PATH
    from cioguard.webhooks.app import serve as serve_app
    from cioguard.webhooks.intake import app_from_settings

    settings = guarded(get_settings)
    app = guarded(lambda: app_from_settings(settings))
    init_process(settings, role="webhooks")
    err.print(
        f"cioguard: receiving webhooks on http://{host}:{port}{WEBHOOK_PATH}", highlight=False
    )
    serve_app(app, host, port)
