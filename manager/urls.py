"""Every URL of the manager. Each view declares the permission it needs (manager.proxies.permissions);
tests/manager/test_permissions.py walks this list with every role."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from manager import observe
from manager.proxies import admin_api, api, views, views_ops
from manager.proxies.permissions import PUBLIC


class SchemaView(SpectacularAPIView):
    required_permission = PUBLIC  # the API's description, no data


class LoginView(auth_views.LoginView):
    required_permission = PUBLIC
    template_name = "proxies/login.html"


class LogoutView(auth_views.LogoutView):
    required_permission = PUBLIC


urlpatterns = [
    path("", views.proxy_list, name="proxy-list"),
    path("proxies/new/", views.proxy_new, name="proxy-new"),
    path("proxies/<int:pk>/", views.proxy_detail, name="proxy-detail"),
    path("proxies/<int:pk>/edit/", views.proxy_edit, name="proxy-edit"),
    path("proxies/<int:pk>/registrations/", views.registration_create, name="registration-create"),
    path("proxies/<int:pk>/registrations/<int:reg>/delete/", views.registration_delete, name="registration-delete"),
    path("proxies/<int:pk>/reregistration/", views.reregistration, name="reregistration"),
    path("proxies/<int:pk>/applications/new/", views.application_new, name="application-new"),
    path("proxies/<int:pk>/applications/<int:app>/", views.application_edit, name="application-edit"),
    path("proxies/<int:pk>/applications/<int:app>/delete/", views.application_delete, name="application-delete"),
    path("proxies/<int:pk>/backups/", views_ops.backup_create, name="backup-create"),
    path("proxies/<int:pk>/backups/<int:backup>/", views_ops.backup_download, name="backup-download"),
    path("proxies/<int:pk>/restore/", views_ops.backup_restore, name="backup-restore"),
    path("proxies/<int:pk>/dns/", views_ops.dns_edit, name="dns-edit"),
    path("instances/", views.instance_list, name="instance-list"),
    path("instances/new/", views.instance_new, name="instance-new"),
    path("instances/<int:pk>/", views.instance_edit, name="instance-edit"),
    path("instances/<int:pk>/devices/", views.devices, name="instance-devices"),
    path("instances/<int:pk>/devices.csv", views.devices_csv, name="instance-devices-csv"),
    path("instances/<int:pk>/devices/<int:device>/delete/", views.device_delete, name="device-delete"),
    path("api/v1/register/", api.register, name="api-register"),
    path("api/v1/proxy/config", api.config, name="api-config"),
    path("api/v1/proxy/heartbeat", api.heartbeat, name="api-heartbeat"),
    path("api/v1/proxy/actions/<int:pk>/backup", api.action_backup, name="api-action-backup"),
    path("api/v1/proxy/actions/<int:pk>/restore", api.action_restore, name="api-action-restore"),
    path("api/v1/proxy/actions/<int:pk>/done", api.action_done, name="api-action-done"),
    path("api/v1/proxies/<int:pk>/backups/", admin_api.proxy_backups, name="api-backups"),
    path("api/v1/proxies/<int:pk>/backups/<int:backup>/", admin_api.backup_download, name="api-backup-download"),
    path("api/v1/proxies/<int:pk>/restore/", admin_api.proxy_restore, name="api-restore"),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("healthz", observe.healthz, name="healthz"),
    path("readyz", observe.readyz, name="readyz"),
    path("metrics", observe.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
