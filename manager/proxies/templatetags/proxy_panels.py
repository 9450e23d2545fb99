"""Operator panels of the proxy page (backup/restore, DNS record), each a template of its own so the
detail page only includes them: `{% load proxy_panels %}{% backup_panel proxy %}{% dns_panel proxy %}`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template

from manager.proxies import backups
from manager.proxies.forms_ops import BackupForm, DnsRecordForm, RestoreForm
from manager.proxies.models import DnsRecord, Proxy, ProxyAction

register = template.Library()


@register.inclusion_tag("proxies/_backup.html", takes_context=True)
def backup_panel(context: template.Context, proxy: Proxy) -> dict[str, Any]:
    session = context["request"].session
    backups.expire_requests()
    requests = list(proxy.actions.all()[:5])
    return {
        "proxy": proxy, "csrf_token": context.get("csrf_token"),
        "backups": proxy.backups.defer("data")[:50], "requests": requests,
        "waiting": any(a.state == "waiting for the proxy" and a.kind == ProxyAction.BACKUP for a in requests),
        "backup_refused": backups.backup_refusal(proxy), "restore_refused": backups.restore_refusal(proxy),
        "backup_notice": session.pop("panel-backup", None), "restore_notice": session.pop("panel-restore", None),
        "backup_form": BackupForm(), "restore_form": RestoreForm(),
    }


@register.inclusion_tag("proxies/_dns.html", takes_context=True)
def dns_panel(context: template.Context, proxy: Proxy) -> dict[str, Any]:
    session = context["request"].session
    record = DnsRecord.objects.filter(proxy=proxy).first()
    failed = session.pop("panel-dns-form", None)
    account = context["request"].user.has_perm("proxies.change_dns_account")
    form = DnsRecordForm(failed["data"], instance=record or DnsRecord(proxy=proxy), account_allowed=account) \
        if failed else DnsRecordForm(instance=record, account_allowed=account)
    if failed:
        form.is_valid()  # show the errors next to the fields again
    last = proxy.last_heartbeat
    return {
        "proxy": proxy, "csrf_token": context.get("csrf_token"), "record": record, "form": form,
        "perms": context.get("perms"), "seen": last.source if last else None, "notice": session.pop("panel-dns", None),
    }


@register.filter
def epoch(value: Any) -> str:
    """Seconds since the epoch (as proxyd reports expiry and attempts) as UTC time; "" for none."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):  # a heartbeat is agent input: never a 500 for it
        return ""
