from __future__ import annotations

from django.urls import path

from cioguard.contrib.django import webhook_view
from tests.contrib.djangoproject.signups.views import sign_up

urlpatterns = [
    path("webhooks/customerio", webhook_view),
    path("sign-up", sign_up),
]
