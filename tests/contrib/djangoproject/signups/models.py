from __future__ import annotations

from django.db import models


class Account(models.Model):
    email = models.CharField(max_length=200)
    plan = models.CharField(max_length=20)

    class Meta:
        app_label = "signups"
