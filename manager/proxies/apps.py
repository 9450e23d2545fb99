from django.apps import AppConfig


class ProxiesConfig(AppConfig):
    name = "manager.proxies"
    label = "proxies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from manager.proxies import changelog, signals  # noqa: F401 - connects the recompile hooks
        from manager.proxies.roles import sync_groups

        # after this app's migrations (its permissions exist then): the role groups follow roles.py
        changelog.connect()
        post_migrate.connect(sync_groups, sender=self, dispatch_uid="pforte-roles")
