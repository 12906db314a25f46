"""The Django app config: ``INSTALLED_APPS = [..., "cioguard.contrib.django"]``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class CioguardConfig(AppConfig):
    """Checks ``settings.CIOGUARD`` at start and points :func:`cioguard.identify` (and the rest)
    at it; the producer itself is built on first use, so commands that never enqueue need no
    keys."""

    name = "cioguard.contrib.django"
    label = "cioguard"
    verbose_name = "cioguard"
    default = True

    def ready(self) -> None:
        from django.test.signals import setting_changed

        from cioguard.contrib.django import install, reset

        install()

        def on_setting_changed(setting: str = "", **_: Any) -> None:
            if setting == "CIOGUARD":  # override_settings(CIOGUARD=...) in tests
                reset()
                install()

        setting_changed.connect(on_setting_changed, weak=False, dispatch_uid="cioguard-settings")
