"""The pages every object of the UI shares: a list (search, filters, sort, pages), a detail table,
a form that turns every refusal into a form error, and a confirmation page for destructive actions.

Lists are filtered by hand (a few lines here) rather than with django-filter: the UI needs only
`?q=` over named fields, exact filters on choices and `?sort=`, and each list names its fields
explicitly, so an unknown parameter is ignored instead of becoming a query.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError, transaction
from django.db.models import Model, Q, QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import patch_cache_control
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe

log = logging.getLogger("manager.access")
PER_PAGE = 50
MAX_QUERY = 100  # characters of a search term


@dataclass(frozen=True)
class Cell:
    text: Any
    href: str = ""
    cls: str = ""


@dataclass(frozen=True)
class Column:
    title: str
    sort: str = ""  # the ORM field this column sorts by ("" = not sortable)


@dataclass(frozen=True)
class Filter:
    name: str  # the query parameter
    label: str
    lookup: str  # the ORM lookup it sets
    choices: Sequence[tuple[str, str]] = ()


@dataclass
class Listing:
    title: str
    columns: Sequence[Column]
    row: Callable[[Any], Sequence[Cell]]
    search: Sequence[str] = ()  # fields `?q=` looks in (icontains)
    filters: Sequence[Filter] = ()
    actions: list[tuple[str, str]] = field(default_factory=list)  # (label, url) above the table
    intro: str = ""
    live: bool = False  # poll the rows every few seconds (status columns)
    # called with the page's objects before their rows are made: fetch per-row data in bulk there
    prepare: Callable[[Sequence[Any]], None] | None = None


def row_html(cells: Sequence[Cell]) -> SafeString:
    """One table row, made here rather than in the template: a list page has hundreds of cells, and
    the template language took most of the page's time for them."""
    tds = []
    for c in cells:
        inner = format_html('<a href="{}">{}</a>', c.href, c.text) if c.href else conditional_escape(c.text)
        tds.append(format_html('<td class="{}">{}</td>', c.cls, inner) if c.cls else format_html("<td>{}</td>", inner))
    return mark_safe("<tr>" + "".join(tds) + "</tr>")  # noqa: S308 - every part escaped by format_html above


def posted(request: HttpRequest) -> Any:
    """A form's data: the POST even when it is empty (`request.POST or None` showed an empty POST an
    unbound form, so a submit without fields looked like a fresh page instead of saying what is missing)."""
    return request.POST if request.method == "POST" else None


def shown_once(response: HttpResponse) -> HttpResponse:
    """An answer with a secret in full (made just now, never shown again): no cache may keep it, so
    neither the back button nor a shared disk cache shows it a second time."""
    patch_cache_control(response, no_store=True, no_cache=True, private=True, max_age=0)
    return response


def list_page(request: HttpRequest, qs: QuerySet[Any], listing: Listing) -> HttpResponse:
    params = request.GET
    q = params.get("q", "").strip()[:MAX_QUERY]
    if q and listing.search:
        qs = qs.filter(functools.reduce(operator.or_, (Q(**{f"{f}__icontains": q}) for f in listing.search)))
    active: dict[str, str] = {}
    for f in listing.filters:
        value = params.get(f.name, "")
        if value and value in {c for c, _ in f.choices}:
            qs = qs.filter(**{f.lookup: value})
            active[f.name] = value
    sorts = {c.sort for c in listing.columns if c.sort}
    sort = params.get("sort", "")
    if sort.lstrip("-") in sorts:
        qs = qs.order_by(sort, "pk")
    else:
        sort = ""
        if not qs.ordered:
            qs = qs.order_by("pk")
    page = Paginator(qs.values_list("pk", flat=True), PER_PAGE).get_page(params.get("page"))
    # Late row lookup: the page's keys first (an index walk, however deep the page), then only those
    # rows with their joins. OFFSET over the whole joined row made page 200 of 10,000 phones cost 60 ms.
    keys = list(page.object_list)
    found = qs.order_by().in_bulk(keys)
    page.object_list = [found[k] for k in keys if k in found]  # `prepare` and the rows see the same objects
    if listing.prepare is not None:
        listing.prepare(page.object_list)
    kept = {k: v for k, v in (("q", q), *active.items(), ("sort", sort)) if v}

    def url(**change: Any) -> str:
        merged = {**kept, **change}
        return "?" + urlencode({k: v for k, v in merged.items() if v not in ("", None)})

    headers = []
    for c in listing.columns:
        if not c.sort:
            headers.append((c.title, "", ""))
            continue
        now = "asc" if sort == c.sort else "desc" if sort == f"-{c.sort}" else ""
        headers.append((c.title, url(sort=f"-{c.sort}" if now == "asc" else c.sort, page=None), now))
    filters = [(f, [(value, label, url(**{f.name: None if active.get(f.name) == value else value}, page=None),
                     active.get(f.name) == value) for value, label in f.choices]) for f in listing.filters]
    return render(request, "proxies/object_list.html", {
        "listing": listing, "headers": headers, "rows": [row_html(listing.row(o)) for o in page], "page": page,
        "q": q, "filters": filters, "kept": kept, "self_url": url(page=page.number if page.number > 1 else None),
        "prev_url": url(page=page.previous_page_number()) if page.has_previous() else "",
        "next_url": url(page=page.next_page_number()) if page.has_next() else "",
    })


def detail_page(request: HttpRequest, title: str, rows: Iterable[tuple[str, Any]], *,
                actions: Sequence[tuple[str, str]] = (), obj: Model | None = None) -> HttpResponse:
    """A table of label/value rows, links for the actions the user may take, and the object's changes."""
    from manager.proxies.changelog import changes_of

    return render(request, "proxies/object_detail.html", {
        "title": title, "actions": actions,
        "rows": [(label, v if isinstance(v, Cell) else Cell(v)) for label, v in rows],
        "changes": changes_of(obj)[:20] if obj is not None and request.user.has_perm("proxies.view_objectchange")
        else None,
    })


def form_page(request: HttpRequest, form: BaseForm, *, title: str, done: Callable[[Any], str],
              saved: Callable[[Any], str], cancel: str, save: Callable[[BaseForm], Any] | None = None,
              intro: str = "") -> HttpResponse:
    """Show `form`; on a valid POST save it (`save`, default `form.save()`), say so and go to `done(obj)`.

    A constraint the form did not foresee (two saves racing for the same name) is a form error too,
    never a 500: the save runs in a savepoint and an IntegrityError is put on the form."""
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                obj = save(form) if save else form.save()  # type: ignore[attr-defined]
        except IntegrityError as exc:
            log.warning("refused save of %s by %s: %s", title, request.user.get_username(), exc)
            form.add_error(None, "This conflicts with an existing object (a name or address that must be unique "
                                 "is taken). Nothing was saved.")
        else:
            messages.success(request, saved(obj))
            return redirect(done(obj))
    if request.method == "POST":
        messages.error(request, "Not saved: correct the fields marked below.")
    return render(request, "proxies/object_form.html", {"form": form, "title": title, "cancel": cancel,
                                                         "intro": intro})


def confirm_page(request: HttpRequest, *, title: str, consequences: Sequence[str], button: str,
                 act: Callable[[], str], done: str, cancel: str, form: BaseForm | None = None) -> HttpResponse:
    """GET: what will happen, and a button. POST: do it (`act` returns the message) and go to `done`.
    A `form` (a passphrase, say) must be valid first; `act` may raise ValueError: shown, nothing done."""
    if request.method == "POST" and (form is None or form.is_valid()):
        try:
            with transaction.atomic():
                text = act()
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, text)
            return redirect(done)
    return render(request, "proxies/confirm.html", {"title": title, "consequences": consequences,
                                                    "button": button, "cancel": cancel, "form": form})


def delete_page(request: HttpRequest, obj: Model, *, message: str, title: str, consequences: Sequence[str],
                button: str, done: str, cancel: str) -> HttpResponse:
    """`confirm_page` whose action deletes `obj` and says `message` (written before the delete, while
    the object still has its fields)."""
    def act() -> str:
        obj.delete()
        return message

    return confirm_page(request, title=title, consequences=consequences, button=button, act=act, done=done,
                        cancel=cancel)
