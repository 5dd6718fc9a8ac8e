"""Studio Console settings: one file, driven by environment variables.

Development defaults (no variables set) give the embedded set-up of `make run`: SQLite, in-process
cache, console e-mail. Production sets DEBUG=0 and the variables listed in docs/OPERATIONS.md.
"""

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from pythonjsonlogger.core import RESERVED_ATTRS

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DEBUG", default=True)
# Production secrets: not a development value, at least this many characters (secrets.token_urlsafe(32)
# gives 43) and 5 different ones. `check --deploy` further wants 50 characters for SECRET_KEY.
SECRET_MIN_LENGTH = 32


def _secret(name: str, development_value: str) -> str:
    """The variable's value; with DEBUG off, a missing, development or weak value stops the process."""
    value = env(name, default="")
    if DEBUG:
        return value or development_value
    if not value:
        problem = "is not set"
    elif value == development_value or value.startswith(("dev-only", "django-insecure")):
        problem = "is the development value"
    elif len(value) < SECRET_MIN_LENGTH or len(set(value)) < 5:
        problem = f"is too weak (fewer than {SECRET_MIN_LENGTH} characters, or fewer than 5 different ones)"
    else:
        return value
    raise ImproperlyConfigured(
        f"{name} {problem}. With DEBUG=0 it must be a random value of at least {SECRET_MIN_LENGTH} characters; "
        f'make one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
    )


SECRET_KEY = _secret("SECRET_KEY", "dev-only-insecure-secret-key-do-not-use-in-production")
# Keys SECRET_KEY was before a rotation, still accepted for what they signed (sessions, reservation ids).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
# Keyed hash for API key secrets. Kept apart from SECRET_KEY so that rotating session signing
# does not invalidate every issued API key.
API_KEY_PEPPER = _secret("API_KEY_PEPPER", "dev-only-api-key-pepper")
if not DEBUG and API_KEY_PEPPER == SECRET_KEY:
    raise ImproperlyConfigured("API_KEY_PEPPER must differ from SECRET_KEY: each is rotated on its own.")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "studio",
    "billing",
    "usage",
    "staff",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_tables2",
    "django_countries",
    "axes",
    "csp",
    "huey.contrib.djhuey",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
]

MIDDLEWARE = [
    # First: its request id and timing cover everything below, redirects and errors included.
    "studio.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # The fleet API (/api/v1/): its own body limit (JSON 413) before anything reads the body, and
    # JSON for every error below, Django's own 404/405/500 included.
    "usage.middleware.FleetApiMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the second factor (staff, SPEC §10).
    "django_otp.middleware.OTPMiddleware",
    # With STAFF_REQUIRE_2FA: staff reach /admin/ (past its sign-in page) only with a verified session.
    "staff.middleware.AdminSecondFactorMiddleware",
    "studio.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Staff viewing as a customer (staff.viewas): after the user and their language are known and after messages,
    # so that the customer's pages run read-only as the customer while the session and messages stay the staff's.
    "staff.viewas.ViewAsMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",
]

# The fleet API's own entry (studio/wsgi.py): what it needs of the stack above and nothing of the console's
# (sessions, locale, CSRF, authentication, messages, CSP, htmx, sign-in throttling): it authenticates by a fleet
# token and answers JSON.
FLEET_MIDDLEWARE = [
    "studio.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "usage.middleware.FleetApiMiddleware",
]

ROOT_URLCONF = "studio.urls"
WSGI_APPLICATION = "studio.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "billing.context_processors.prepayment_notice",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0 if DEBUG else 60)
# A kept connection that the server dropped (restart, failover, idle timeout) is tested with
# SELECT 1 before a request's first query and replaced, instead of failing that request with a 500.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and not env.bool("POSTGRES_JIT", default=False):
    # The planner overestimates the dashboard's per-bucket reads (it cannot know how few rows each holds) and
    # JIT-compiles them: 100 ms of a 120 ms read (bench/README.md). Nothing here is a long analytic query.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_USER_MODEL = "studio.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "api-keys"
LOGOUT_REDIRECT_URL = "login"

# Login throttling: five failures for one e-mail from one address lock that pair for 15 minutes.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_SENSITIVE_PARAMETERS = ["password"]
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "studio.throttling.username_for_throttling"
# The address a failure counts against is the real client's, by the TRUSTED_PROXY_COUNT rule below.
AXES_CLIENT_IP_CALLABLE = "studio.throttling.client_ip"

# Client addresses: how many reverse proxies in front of the app append to X-Forwarded-For. 0 (no
# proxy) ignores the header, so nobody can forge an address; 1 behind one load balancer.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Requests that send e-mail, counted in the cache per fixed window: "count/period" (s, m, h, d).
# Past a per-address rate the answer stays the same but no e-mail leaves; past a per-client rate, 429.
THROTTLE_PASSWORD_RESET_PER_ADDRESS = env("THROTTLE_PASSWORD_RESET_PER_ADDRESS", default="3/h")
THROTTLE_PASSWORD_RESET_PER_CLIENT = env("THROTTLE_PASSWORD_RESET_PER_CLIENT", default="10/h")
THROTTLE_SIGNUP_PER_ADDRESS = env("THROTTLE_SIGNUP_PER_ADDRESS", default="3/h")
THROTTLE_SIGNUP_PER_CLIENT = env("THROTTLE_SIGNUP_PER_CLIENT", default="10/h")
# Attempts to redeem a promotional code, per signed-in user (right or wrong): past it, 429.
THROTTLE_PROMO_REDEEM_PER_USER = env("THROTTLE_PROMO_REDEEM_PER_USER", default="10/h")
# How long a sign-up confirmation link works.
SIGNUP_LINK_MAX_AGE = timedelta(days=env.int("SIGNUP_LINK_DAYS", default=3))

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ja", _("Japanese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = "UTC"
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Every e-mail is a row in the outbox (studio.outbox), written in the transaction of the change it
# tells about; the job runner delivers it through OUTBOX_DELIVERY_BACKEND with retries.
EMAIL_BACKEND = "studio.outbox.OutboxBackend"
OUTBOX_DELIVERY_BACKEND = env(
    "OUTBOX_DELIVERY_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
# Failed attempts (1, 2, 4 … minutes apart, at most an hour) before a message is marked failed.
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=10)
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
# Seconds before a silent mail server counts as a failed attempt (the outbox's lease is 5 minutes).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Studio Console <no-reply@studio.example>")

# The job runner (huey): `manage.py run_huey` runs periodic jobs (each app's jobs.py) and the
# outbox's deliver-now requests. Redis when REDIS_URL is set; otherwise a SQLite file, so that
# `make run` needs nothing else. Jobs never run inside a web request, even with DEBUG.
HUEY = {
    "immediate": False,
    "results": False,  # nobody reads a job's return value
    "consumer": {"workers": 2, "worker_type": "thread"},  # a long job does not hold up the outbox
}
if REDIS_URL:
    HUEY.update(huey_class="huey.RedisHuey", url=REDIS_URL)
else:
    HUEY.update(huey_class="huey.SqliteHuey", filename=str(BASE_DIR / "jobs.sqlite3"))

# Strict CSP: scripts and styles only from our own static files; no inline code anywhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Load balancers probe over plain HTTP: the health endpoints answer instead of redirecting.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    LANGUAGE_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Billing (SPEC §3.3–3.4, §8). The processor is the built-in test one unless set otherwise.
PAYMENT_PROCESSOR = env("PAYMENT_PROCESSOR", default="billing.processor.TestProcessor")
# The test processor's card that is charged but whose answer never arrives (to be reconciled).
TEST_PROCESSOR_TIMEOUT_CARD = env("TEST_PROCESSOR_TIMEOUT_CARD", default="4000000000000077")
WELCOME_CREDIT_AMOUNT = Decimal(env("WELCOME_CREDIT_AMOUNT", default="300"))
WELCOME_CREDIT_DAYS = env.int("WELCOME_CREDIT_DAYS", default=90)
PREPAYMENT_DEFAULT_AMOUNT = Decimal(env("PREPAYMENT_DEFAULT_AMOUNT", default="10"))
# The console's address as people reach it, for links in e-mail written by jobs (no request to ask).
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

# Staff console (SPEC §10). Staff pass a second factor (TOTP) before any staff page or the admin; the
# demo (DEBUG) turns it off by default and the staff pages say so.
STAFF_REQUIRE_2FA = env.bool("STAFF_REQUIRE_2FA", default=not DEBUG)
# Refunds and goodwill credits above this many USD need a second Finance member's approval (X10).
STAFF_APPROVAL_THRESHOLD = Decimal(env("STAFF_APPROVAL_THRESHOLD", default="100"))
OTP_TOTP_ISSUER = "Studio Console"
# Device keys and recovery codes are never shown in the admin (a lost device is deleted there, not read).
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Usage (SPEC §4): how long a process keeps its catalog snapshot (prices, limits).
CATALOG_TTL_SECONDS = env.int("CATALOG_TTL_SECONDS", default=30)
# Output tokens that quota:check adds to a request's prompt when it estimates its cost for the
# spend limit (the fleet does not know the output yet). 0: the estimate is the prompt alone.
SPEND_ESTIMATE_OUTPUT_TOKENS = env.int("SPEND_ESTIMATE_OUTPUT_TOKENS", default=0)
# How long quota:check's reservation of an admitted request's estimate (TPM, spend) waits for the request's usage
# to be reported (SPEC §9); after that the reported usage is counted in full, in addition to the estimate.
RESERVATION_TTL_SECONDS = env.int("RESERVATION_TTL_SECONDS", default=600)
if RESERVATION_TTL_SECONDS < 1:
    raise ImproperlyConfigured("RESERVATION_TTL_SECONDS must be at least 1.")
# Seconds between charge runs (usage.jobs): reported usage reaches the balances within about this.
CHARGE_INTERVAL_SECONDS = env.int("CHARGE_INTERVAL_SECONDS", default=20)
# PostgreSQL: ingestion appends what each batch adds to the rollups, and a process that stored a batch rolls them up
# at most this often (usage.fold): the usage pages and the Limits tab's peaks lag the reports by about this under
# traffic (by CHARGE_INTERVAL_SECONDS after the last batch). 0: every batch is rolled up as it is stored.
ROLLUP_FOLD_SECONDS = env.float("ROLLUP_FOLD_SECONDS", default=2.0)
if ROLLUP_FOLD_SECONDS < 0:
    raise ImproperlyConfigured("ROLLUP_FOLD_SECONDS must be at least 0.")
# PostgreSQL keeps raw usage events in one partition per Pacific month (usage.partitions): the job runner creates
# the current month's and this many following months' partitions ahead of time (ingestion creates a missing one).
USAGE_PARTITIONS_AHEAD = env.int("USAGE_PARTITIONS_AHEAD", default=2)
if USAGE_PARTITIONS_AHEAD < 1:
    raise ImproperlyConfigured("USAGE_PARTITIONS_AHEAD must be at least 1.")
# Raw events of a month are dropped once every statement with usage of it is issued, and not before this many
# whole months have passed since (the current month and the ones before it are kept). Rollups are kept forever.
USAGE_RAW_RETENTION_MONTHS = env.int("USAGE_RAW_RETENTION_MONTHS", default=3)
if USAGE_RAW_RETENTION_MONTHS < 1:
    raise ImproperlyConfigured("USAGE_RAW_RETENTION_MONTHS must be at least 1.")
# How long a process remembers a valid fleet token: a revocation applies within this time. While the
# database is unreachable, a token this process knows stays valid (quota:check goes on from Redis).
FLEET_TOKEN_CACHE_SECONDS = env.int("FLEET_TOKEN_CACHE_SECONDS", default=10)
# quota:check from the admission store in Redis, one round trip, no database (usage.admission_redis); with
# REDIS_URL only. 0: from the database, as before (a switch for operators, and the benchmark's baseline).
ADMISSION_STORE = env.bool("ADMISSION_STORE", default=True)

DJANGO_TABLES2_TEMPLATE = "partials/table.html"

# One line per request on "studio.request" (studio.middleware.RequestLogMiddleware); every record
# carries the request id of the request it was written in. LOG_FORMAT=json: one JSON object a line.
LOG_FORMAT = env("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "studio.middleware.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["asctime", "levelname", "name", "message", "request_id"],
            # Other attributes of a record become keys, except Django's request object (its
            # repr has the query string).
            "reserved_attrs": [*RESERVED_ATTRS, "request"],
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # Request bodies never reach the logs: they may hold API keys or passwords.
    "loggers": {
        "django.request": {"level": "ERROR"},
        "axes": {"level": "WARNING"},
        # The job runner's own lines, once: run_huey adds a second handler only to a logger without one.
        "huey": {"handlers": ["console"], "propagate": False},
    },
}
