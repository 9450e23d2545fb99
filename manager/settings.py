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
# The data dir holds the secrets key and (with SQLite) the database: owner-only.
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
os.chmod(DATA_DIR, 0o700)


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
# Behind a TLS-terminating reverse proxy: PFORTE_SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto makes
# `X-Forwarded-Proto: https` mean the request came over TLS. Off by default: a client could send
# the header itself, so only set it when that proxy always overwrites it.
_ssl_header = os.environ.get("PFORTE_SECURE_PROXY_SSL_HEADER", "").strip()
SECURE_PROXY_SSL_HEADER = (f"HTTP_{_ssl_header.upper().replace('-', '_')}", "https") if _ssl_header else None
# An https:// public URL means production: TLS only, cookies only over TLS, HSTS.
PRODUCTION = _public.scheme == "https"
if PRODUCTION:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("PFORTE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = os.environ.get("PFORTE_HSTS_SUBDOMAINS", "1") == "1"
    SECURE_HSTS_PRELOAD = os.environ.get("PFORTE_HSTS_PRELOAD", "1") == "1"
    # load balancers probe health over plain http on the backend address
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "axes",
    "manager.proxies",  # last: its post_migrate gives the admin role every permission, so all exist by then
]
MIDDLEWARE = [
    "manager.observe.request_metrics",  # first: its duration covers every other middleware
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files from the manager itself, in every mode
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "manager.proxies.permissions.RequireDeclaredPermission",
    "manager.proxies.changelog.CurrentUser",
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
# Config revisions kept per proxy (the newest is the one served; older ones are history).
PFORTE_REVISIONS_KEEP = max(1, int(os.environ.get("PFORTE_REVISIONS_KEEP", "20")))
# The change log keeps this many days, and at most this many entries (manager.proxies.changelog.prune).
PFORTE_CHANGELOG_DAYS = max(1, int(os.environ.get("PFORTE_CHANGELOG_DAYS", "90")))
PFORTE_CHANGELOG_KEEP = max(1, int(os.environ.get("PFORTE_CHANGELOG_KEEP", "100000")))
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
    # created owner-only before SQLite does (it would follow the umask); -wal/-shm take its mode
    _db = Path(DATABASES["default"]["NAME"])
    if _db.name and not _db.exists():
        _db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(_db, os.O_WRONLY | os.O_CREAT, 0o600))
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
# whitenoise serves the apps' static files straight from their directories (no collectstatic step), with
# DEBUG on or off, under uvicorn as under the test client
WHITENOISE_USE_FINDERS = True
STORAGES = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["manager.proxies.permissions.Nobody"],  # each view names its own
    "UNAUTHENTICATED_USER": None,
    "SEARCH_PARAM": "q",  # as the UI's lists and NetBox's API
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pforte manager API", "VERSION": "1",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "manager.proxies.api_schema.add_agent_config",
                             "manager.proxies.api_schema.type_answers"],
    # Swagger UI and ReDoc from the sidecar package, served by the manager itself: no CDN
    "SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR", "REDOC_DIST": "SIDECAR",
}
# Keep the loggers that exist when Django starts (uvicorn's access and error logs, and in tests the
# proxy's own): dictConfig's default would silence every one of them. Django's (django.request
# errors) and uvicorn's (access lines) reach the root handler: one format for all, text or JSON
# (PFORTE_LOG_FORMAT, or `serve --log-format`), with journald priorities under systemd.
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "formatters": {"pforte": {"()": "proxyd.logs.stream_formatter",
                                     "fmt": os.environ.get("PFORTE_LOG_FORMAT", "text")}},
           "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "pforte"}},
           "root": {"handlers": ["console"], "level": os.environ.get("PFORTE_LOG_LEVEL", "INFO")},
           # axes logs every login at INFO; its lockouts are WARNING
           "loggers": {"axes": {"level": "WARNING"}}}
