from django.contrib import admin

from manager.proxies import models as m

admin.site.register(m.Instance)
admin.site.register(m.Proxy)
admin.site.register(m.Application)
admin.site.register(m.Registration)
admin.site.register(m.ConfigRevision)
admin.site.register(m.Heartbeat)
admin.site.register(m.Device)
admin.site.register(m.Backup)
admin.site.register(m.DnsRecord)
