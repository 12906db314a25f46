"""A sign-up view as an application writes it: one transaction, cioguard called inside."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from cioguard.contrib import django as cio
from tests.contrib.djangoproject.signups.models import Account


@csrf_exempt
def sign_up(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        account = Account.objects.create(email=request.POST["email"], plan="pro")
        job = cio.identify(account.pk, {"email": account.email, "plan": account.plan})
        cio.track(account.pk, "signed_up", {"plan": account.plan})
        if request.POST.get("fail") == "1":
            transaction.set_rollback(True)  # a later step failed: nothing may be published
    return JsonResponse({"id": account.pk, "job": job})
