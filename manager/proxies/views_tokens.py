"""UI of users' API tokens: each user makes, sees and revokes their own (admins: everyone's).

A new token is shown once, in the answer to the form that made it (no redirect, so it is never
kept in the session or any other store); afterwards only its first characters are."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from manager.proxies.models import ApiToken
from manager.proxies.permissions import requires
from manager.proxies.roles import ROLES, at_most, role_of
from manager.proxies.ui import (
    Cell,
    Column,
    Filter,
    Listing,
    delete_page,
    detail_page,
    list_page,
    posted,
    shown_once,
)

MAX_DAYS = 3650


def visible(user) -> QuerySet[ApiToken]:  # type: ignore[no-untyped-def]
    qs = ApiToken.objects.select_related("user")
    return qs if user.has_perm("proxies.manage_apitoken") else qs.filter(user=user)


class TokenForm(forms.ModelForm):
    days = forms.IntegerField(label="Valid for (days)", required=False, min_value=1, max_value=MAX_DAYS,
                              help_text="empty: until revoked")

    class Meta:
        model = ApiToken
        fields = ["name", "role"]

    def __init__(self, *args, owner, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        ceiling = role_of(owner)
        self.fields["role"].choices = [(r, r) for r in ROLES if at_most(r, ceiling)]
        self.fields["role"].help_text = "what the token may do: never more than your own role"
        self.instance.user = owner

    def save(self, commit: bool = True) -> ApiToken:
        token = super().save(commit=False)
        if self.cleaned_data.get("days"):
            token.expires = timezone.now() + timedelta(days=self.cleaned_data["days"])
        token.plaintext = token.mint()  # type: ignore[attr-defined]
        token.save()
        return token


def _when(t) -> str:  # type: ignore[no-untyped-def]
    return f"{t:%Y-%m-%d %H:%M} UTC" if t else "never"


@requires("proxies.view_apitoken")
def token_list(request: HttpRequest) -> HttpResponse:
    def row(t: ApiToken) -> list[Cell]:
        return [Cell(t.name, reverse("token-detail", args=[t.pk])), Cell(f"{t.prefix}…"), Cell(t.user.username),
                Cell(t.role), Cell(_when(t.created)), Cell(_when(t.last_used)),
                Cell(("expired " if t.expired else "") + (_when(t.expires) if t.expires else "until revoked"))]

    listing = Listing("API tokens", [Column("Name", "name"), Column("Token"), Column("User", "user__username"),
                                     Column("Role", "role"), Column("Created", "created"),
                                     Column("Last used", "last_used"), Column("Expires", "expires")], row,
                      search=("name", "prefix", "user__username"),
                      filters=[Filter("role", "Role", "role", [(r, r) for r in ROLES])],
                      intro="Send a token as `Authorization: Bearer <token>` to /api/v1/ (over https, or on "
                            "the manager's host). It can do what its role allows and its user may, no more.")
    if request.user.has_perm("proxies.add_apitoken"):
        listing.actions.append(("Make API token", reverse("token-new")))
    return list_page(request, visible(request.user), listing)


@requires("proxies.add_apitoken")
def token_new(request: HttpRequest) -> HttpResponse:
    from manager.proxies.ui import form_page

    form = TokenForm(posted(request), owner=request.user)
    if request.method == "POST" and form.is_valid():
        token = form.save()
        messages.success(request, f"API token {token.name} made: copy it now, it is shown only this once.")
        return shown_once(_detail(request, token, shown=token.plaintext))  # type: ignore[attr-defined]
    return form_page(request, form, title="New API token", done=str, saved=str, cancel=reverse("token-list"),
                     intro="The token is shown once, on the next page; only its first characters are kept "
                           "readable.")


@requires("proxies.view_apitoken")
def token_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _detail(request, get_object_or_404(visible(request.user), pk=pk))


def _detail(request: HttpRequest, t: ApiToken, shown: str = "") -> HttpResponse:
    actions = [("Revoke", reverse("token-delete", args=[t.pk]))] \
        if request.user.has_perm("proxies.delete_apitoken") else []
    rows: list[tuple[str, object]] = [
        ("Token", Cell(shown, cls="copy") if shown else f"{t.prefix}… (shown once when it was made; only its "
                                                          "hash is stored)"),
        ("User", t.user.username), ("Role", t.role), ("Created", _when(t.created)),
        ("Last used", _when(t.last_used)),
        ("Expires", ("expired " if t.expired else "") + (_when(t.expires) if t.expires else "until revoked"))]
    return detail_page(request, f"API token {t.name}", rows, actions=actions, obj=t)


@requires("proxies.delete_apitoken")
def token_delete(request: HttpRequest, pk: int) -> HttpResponse:
    t = get_object_or_404(visible(request.user), pk=pk)
    return delete_page(request, t, message=f"API token {t.name} ({t.prefix}…) revoked.",
                       title=f"Revoke API token {t.name}?", button="Revoke token",
                       done=reverse("token-list"), cancel=reverse("token-detail", args=[pk]),
                       consequences=[f"Every request with {t.prefix}… is refused (401) from now on.",
                                     f"It was last used {_when(t.last_used)}."])
