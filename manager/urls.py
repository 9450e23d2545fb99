"""Every URL of the manager. Each view declares the permission it needs (manager.proxies.permissions);
tests/manager/test_permissions.py walks this list with every role."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from manager import observe
from manager.proxies import admin_api, api, api_acme, api_objects, views, views_ops, views_tokens
from manager.proxies.permissions import PUBLIC


class SchemaView(SpectacularAPIView):
    required_permission = PUBLIC  # the API's description, no data


class SwaggerView(SpectacularSwaggerView):
    required_permission = PUBLIC  # the API's description, no data


class RedocView(SpectacularRedocView):
    required_permission = PUBLIC


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
    path("proxies/<int:pk>/status/", views.proxy_status, name="proxy-status"),
    path("proxies/<int:pk>/delete/", views.proxy_delete, name="proxy-delete"),
    path("proxies/<int:pk>/provisioning-key/", views.provisioning_key_rotate, name="provisioning-key-rotate"),
    path("proxies/<int:pk>/registrations/", views.registration_create, name="registration-create"),
    path("proxies/<int:pk>/registrations/<int:reg>/", views.registration_detail, name="registration-detail"),
    path("proxies/<int:pk>/registrations/<int:reg>/delete/", views.registration_delete, name="registration-delete"),
    path("proxies/<int:pk>/reregistration/", views.reregistration, name="reregistration"),
    path("proxies/<int:pk>/applications/new/", views.application_new, name="application-new"),
    path("proxies/<int:pk>/applications/<int:app>/", views.application_detail, name="application-detail"),
    path("proxies/<int:pk>/applications/<int:app>/edit/", views.application_edit, name="application-edit"),
    path("proxies/<int:pk>/applications/<int:app>/delete/", views.application_delete, name="application-delete"),
    path("proxies/<int:pk>/backups/", views_ops.backup_create, name="backup-create"),
    path("proxies/<int:pk>/backups/<int:backup>/", views_ops.backup_detail, name="backup-detail"),
    path("proxies/<int:pk>/backups/<int:backup>/download/", views_ops.backup_download, name="backup-download"),
    path("proxies/<int:pk>/backups/<int:backup>/restore/", views_ops.backup_restore_stored,
         name="backup-restore-stored"),
    path("proxies/<int:pk>/backups/<int:backup>/delete/", views_ops.backup_delete, name="backup-delete"),
    path("proxies/<int:pk>/restore/", views_ops.backup_restore, name="backup-restore"),
    path("proxies/<int:pk>/dns/", views_ops.dns_edit, name="dns-edit"),
    path("applications/", views.application_list, name="application-list"),
    path("registrations/", views.registration_list, name="registration-list"),
    path("backups/", views_ops.backup_list, name="backup-list"),
    path("instances/", views.instance_list, name="instance-list"),
    path("instances/new/", views.instance_new, name="instance-new"),
    path("instances/<int:pk>/", views.instance_detail, name="instance-detail"),
    path("instances/<int:pk>/edit/", views.instance_edit, name="instance-edit"),
    path("instances/<int:pk>/delete/", views.instance_delete, name="instance-delete"),
    path("instances/<int:pk>/devices/", views.devices, name="instance-devices"),
    path("instances/<int:pk>/devices.csv", views.devices_csv, name="instance-devices-csv"),
    path("instances/<int:pk>/devices/<int:device>/", views.device_detail, name="device-detail"),
    path("instances/<int:pk>/devices/<int:device>/edit/", views.device_edit, name="device-edit"),
    path("instances/<int:pk>/devices/<int:device>/delete/", views.device_delete, name="device-delete"),
    path("devices/", views.device_list, name="device-list"),
    path("dns/", views_ops.dns_list, name="dns-list"),
    path("dns/new/", views_ops.dns_new, name="dns-new"),
    path("dns/<int:pk>/", views_ops.dns_detail, name="dns-detail"),
    path("dns/<int:pk>/edit/", views_ops.dns_edit_record, name="dns-edit-record"),
    path("dns/<int:pk>/delete/", views_ops.dns_delete, name="dns-delete"),
    path("users/", views_ops.user_list, name="user-list"),
    path("users/new/", views_ops.user_new, name="user-new"),
    path("users/<int:pk>/", views_ops.user_detail, name="user-detail"),
    path("users/<int:pk>/edit/", views_ops.user_edit, name="user-edit"),
    path("users/<int:pk>/delete/", views_ops.user_delete, name="user-delete"),
    path("tokens/", views_tokens.token_list, name="token-list"),
    path("tokens/new/", views_tokens.token_new, name="token-new"),
    path("tokens/<int:pk>/", views_tokens.token_detail, name="token-detail"),
    path("tokens/<int:pk>/delete/", views_tokens.token_delete, name="token-delete"),
    path("changes/", views_ops.change_list, name="change-list"),
    path("changes/<int:pk>/", views_ops.change_detail, name="change-detail"),
    path("api/v1/register/", api.register, name="api-register"),
    path("api/v1/proxy/config", api.config, name="api-config"),
    path("api/v1/proxy/heartbeat", api.heartbeat, name="api-heartbeat"),
    path("api/v1/proxy/goodbye", api.goodbye, name="api-goodbye"),
    path("api/v1/proxy/acme-dns", api_acme.acme_dns, name="api-acme-dns"),
    path("api/v1/proxy/actions/<int:pk>/backup", api.action_backup, name="api-action-backup"),
    path("api/v1/proxy/actions/<int:pk>/restore", api.action_restore, name="api-action-restore"),
    path("api/v1/proxy/actions/<int:pk>/done", api.action_done, name="api-action-done"),
    path("api/v1/proxies/<int:pk>/backups/", admin_api.proxy_backups, name="api-backups"),
    path("api/v1/proxies/<int:pk>/backups/<int:backup>/", admin_api.backup_download, name="api-backup-download"),
    path("api/v1/proxies/<int:pk>/restore/", admin_api.proxy_restore, name="api-restore"),
    path("api/v1/objects/", include(api_objects.urls())),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/docs/", SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/docs/redoc/", RedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("healthz", observe.healthz, name="healthz"),
    path("readyz", observe.readyz, name="readyz"),
    path("metrics", observe.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
