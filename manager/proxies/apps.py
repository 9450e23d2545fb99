from django.apps import AppConfig


class ProxiesConfig(AppConfig):
    name = "manager.proxies"
    label = "proxies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from manager.proxies import signals  # noqa: F401 - connects the recompile hooks
