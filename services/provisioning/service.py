"""The provisioning service: HTTPS on https_port (and plain HTTP on http_port in mode
http_and_https), built on the HTTP router's listener and forwarding machinery."""

from __future__ import annotations

from proxyd.config import ProxyConfig
from proxyd.stats import ServiceStats
from services.http.routes import Router
from services.http.service import HttpService, HttpView, ListenerSpec
from services.provisioning.routes import ProvisioningTable, table_for


class ProvisioningService(HttpService):
    name = "provisioning"

    @classmethod
    def view(cls, cfg: ProxyConfig) -> HttpView | None:
        prov = cfg.services.provisioning
        if prov.mode == "off":
            return None
        templates = tuple((i.name, i.provisioning) for i in cfg.instances if i.provisioning)
        # one table object shared by both listeners: one failure count per source
        table: Router = table_for(prov.mode, prov.key, templates)
        host = cfg.bind_address
        listeners: list[tuple[ListenerSpec, Router]] = [(ListenerSpec(host, prov.https_port, True), table)]
        if prov.mode == "http_and_https":
            listeners.append((ListenerSpec(host, prov.http_port, False), table))
        return HttpView(tuple(listeners), cfg.services.web.upstream_timeout, limits=cfg.services.web.limits)

    def report(self) -> ServiceStats:
        out = super().report()
        tables = [li.router for li in self.listeners.values() if isinstance(li.router, ProvisioningTable)]
        if tables:
            lim = tables[0].limiter
            out.counters["source_blocks"] = lim.blocks
            out.gauges["blocked_sources"] = lim.blocked_count()
        return out
