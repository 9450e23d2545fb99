"""Django settings. Secrets come from the environment or are generated once into the data dir."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

DATA_DIR = Path(os.environ.get("PFORTE_MANAGER_DATA", ".state/manager")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret(name: str, make) -> str:  # type: ignore[no-untyped-def]
    """From env PFORTE_<NAME>, else a file in the data dir created once (0600)."""
    env = os.environ.get(f"PFORTE_{name.upper()}")
    if env:
        return env
    path = DATA_DIR / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
    return path.read_text().strip()


SECRET_KEY = _secret("secret_key", lambda: secrets.token_urlsafe(50))
# Encrypts secrets at rest (private keys, provisioning keys, DDNS credentials): Fernet key.
SECRETS_KEY = _secret("secrets_key", lambda: __import__("cryptography.fernet").fernet.Fernet.generate_key().decode())
DEBUG = os.environ.get("PFORTE_DEBUG") == "1"
# The URL proxies and browsers reach the manager at. Registration URLs and the manager URL given to
# agents are built from it, never from a request's Host header (which whoever sends it chooses).
# `pforte-manager serve` sets it from --host/--port when it is not configured.
PUBLIC_URL = os.environ.get("PFORTE_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
_public = urlsplit(PUBLIC_URL)
if _public.scheme not in ("http", "https") or not _public.hostname:
    raise ImproperlyConfigured(f"PFORTE_PUBLIC_URL={PUBLIC_URL!r}: expected http(s)://HOST[:PORT]")
# Host names the manager answers to: loopback and the public URL's host, plus PFORTE_ALLOWED_HOSTS.
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", _public.hostname,
                 *filter(None, os.environ.get("PFORTE_ALLOWED_HOSTS", "").split(","))]
CSRF_TRUSTED_ORIGINS = [f"{_public.scheme}://{_public.netloc}",
                        *filter(None, os.environ.get("PFORTE_CSRF_TRUSTED_ORIGINS", "").split(","))]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "axes",
    "manager.proxies",  # last: its post_migrate gives the admin role every permission, so all exist by then
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "manager.proxies.permissions.RequireDeclaredPermission",
]
# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins an account, and separately
# a source address, is locked for the cool-off time; a successful login resets the account's count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("PFORTE_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("PFORTE_LOGIN_LOCKOUT_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one alone locks: per account, per address
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "proxies/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# Sessions end 12 h after login (PFORTE_SESSION_HOURS), and with the browser when PFORTE_SESSION_BROWSER=1.
SESSION_COOKIE_AGE = int(float(os.environ.get("PFORTE_SESSION_HOURS", "12")) * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = os.environ.get("PFORTE_SESSION_BROWSER") == "1"
ROOT_URLCONF = "manager.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
ASGI_APPLICATION = "manager.asgi.application"
WSGI_APPLICATION = "manager.wsgi.application"
DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{DATA_DIR / 'manager.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets long-poll reads run beside heartbeat writes; IMMEDIATE takes the write lock at BEGIN
    # so two writers queue on `timeout` instead of one failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": 20, "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    })
else:
    # connections kept across requests (the agents' front and the feed use a few threads, each with one)
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("PFORTE_DB_CONN_MAX_AGE", "600"))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [{"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "static/"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["manager.proxies.permissions.Nobody"],  # each view names its own
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {"TITLE": "pforte manager API", "VERSION": "1"}
# Keep the loggers that exist when Django starts (uvicorn's access and error logs, and in tests the
# proxy's own): dictConfig's default would silence every one of them.
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["console"], "level": "INFO"},
           # axes logs every login at INFO; its lockouts are WARNING
           "loggers": {"axes": {"level": "WARNING"}}}
