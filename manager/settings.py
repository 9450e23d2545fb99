"""Django settings. Secrets come from the environment or are generated once into the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

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
ALLOWED_HOSTS = os.environ.get("PFORTE_ALLOWED_HOSTS", "*").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "manager.proxies",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
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
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {"TITLE": "pforte manager API", "VERSION": "1"}
LOGGING = {"version": 1, "handlers": {"console": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["console"], "level": "INFO"}}
