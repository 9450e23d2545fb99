import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "manager.settings")
django_application = get_asgi_application()

from manager.proxies.agent_front import in_front_of  # noqa: E402  (needs Django set up)

application = in_front_of(django_application)
