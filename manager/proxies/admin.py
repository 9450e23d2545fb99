from django.contrib import admin

from manager.proxies.models import Application, ConfigRevision, Device, Heartbeat, Instance, Proxy, Registration

admin.site.register(Instance)
admin.site.register(Proxy)
admin.site.register(Application)
admin.site.register(Registration)
admin.site.register(ConfigRevision)
admin.site.register(Heartbeat)
admin.site.register(Device)
