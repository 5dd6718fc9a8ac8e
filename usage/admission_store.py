"""What quota:check reads, kept in Redis: keys, projects and the catalog's limits (issue 14).

quota:check is answered by one Redis script (usage.admission_redis) that finds the key, its project and the limits
and counts, without the database. Its data is written here, from the database, whenever it changes:

- ``adm:k`` (hash): API key secret hash -> ``"<key pk>:<project pk>"``; ``"-"`` once the key is revoked (a tombstone:
  a revoked key never comes back, so no later write may make it valid again).
- ``adm:p:<project pk>`` (hash): what admission needs of the project, already decided by the rules of the database
  side (``project_records``): ``id`` (its public id), ``t`` (its effective tier), ``st`` ("x": its billing account
  is suspended or closed), ``cap`` and ``since`` (the monthly spend cap in micro-USD and when it was set, only where
  it applies), ``o:<model>`` (the QuotaOverride of a model, ``"rpm,tpm,rpd"``, empty where none; only on paid tiers).
- ``adm:c`` (hash): the catalog's admission figures: ``m:<model>`` (an active model: "1" if it is offered on the free
  tier, else "0"), ``r:<tier>:<model>`` (``"rpm,tpm,rpd"``), ``s:<tier>`` (the spend limit, micro-USD per 10
  minutes), ``ok`` (written: the hash is complete).
- ``adm:used`` (hash): key pk -> epoch second of its last check; moved to ``ApiKey.last_used_at`` by a job.

How it stays right (docs/ARCHITECTURE.md, "Admission without the database"):

1. Write-through. Each change names what it changed (``keys_changed``, ``projects_changed``, ``accounts_changed``,
   ``catalog_changed``; model signals call them, usage.apps). A project's record is deleted at once, so that a check
   meanwhile (or in the same transaction) reads the database, and written again from the database after the commit.
   A revoked key's record is deleted at once and becomes a tombstone after the commit.
2. Read-through. A check that finds no record (never written, evicted, Redis emptied) is answered from the database,
   as before this store existed, and writes what it read only where nothing is written yet, so it never overwrites a
   newer write-through.
3. Agreement. ``sync`` compares every record with the database and, with ``fix``, repairs differences under
   WATCH, so that a repair never overwrites a write-through made meanwhile (``manage.py sync_admission``; the job
   runner runs it every few minutes, ``--flush`` rebuilds from nothing).

Failing Redis never fails the change that calls it: the failure is logged, and the next ``sync`` repairs.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import redis
from django.conf import settings
from django.db import transaction
from redis.exceptions import RedisError, WatchError

from billing.models import AccountStatus, ProjectBilling
from studio.models import ApiKey, Project, Tier, effective_tier
from usage import spendcap
from usage.models import CatalogModel, QuotaOverride, RateLimit, SpendLimit

logger = logging.getLogger(__name__)

KEYS = "adm:k"
REVOKED = "-"
CATALOG = "adm:c"
USED = "adm:used"
PROJECT_PREFIX = "adm:p:"
MICRO = Decimal(1_000_000)
CHUNK = 2000
SYNC_TIMEOUT = 5.0  # seconds: writes and the agreement check, off the hot path


def project_key(pk: int) -> str:
    return f"{PROJECT_PREFIX}{pk}"


def key_value(key_pk: int, project_pk: int, revoked: bool) -> str:
    return REVOKED if revoked else f"{key_pk}:{project_pk}"


def _figures(*values) -> str:
    return ",".join("" if value is None else str(value) for value in values)


# --- records, from the database ---------------------------------------------------------------


def key_records(keys: Iterable[tuple[str, int, int, bool]]) -> dict[str, str]:
    """(secret hash, key pk, project pk, revoked) -> {secret hash: value}."""
    return {secret: key_value(pk, project, revoked) for secret, pk, project, revoked in keys}


def key_rows(keys) -> list[tuple[str, int, int, bool]]:
    """(secret hash, key pk, project pk, revoked) of the ApiKey queryset `keys`."""
    rows = keys.values_list("secret_hash", "pk", "project_id", "revoked_at")
    return [(secret, pk, project, revoked_at is not None) for secret, pk, project, revoked_at in rows]


def project_records(pks: Iterable[int]) -> dict[int, dict[str, str]]:
    """{project pk: its record} for the projects of `pks` that exist: two queries."""
    pks = list(pks)
    rows = Project.objects.filter(pk__in=pks).values_list(
        "pk", "project_id", "tier", "billing_state", "monthly_spend_cap", "spend_cap_since", "billing__account__status"
    )
    records = {}
    for pk, project_id, tier, billing_state, cap, since, account_status in rows:
        tier = effective_tier(tier, billing_state)
        record = {"id": project_id, "t": tier}
        if account_status is not None and account_status != AccountStatus.ACTIVE:
            record["st"] = "x"
        if cap is not None and spendcap.applies(tier):
            record["cap"] = str(spendcap.cap_micro_usd(cap))
            record["since"] = str(int(since.timestamp()))
        records[pk] = record
    paid = [pk for pk, record in records.items() if record["t"] != Tier.FREE]
    if paid:
        for override in QuotaOverride.objects.filter(project_id__in=paid):
            records[override.project_id][f"o:{override.model_id}"] = _figures(override.rpm, override.tpm, override.rpd)
    return records


def catalog_record() -> dict[str, str]:
    record = {"ok": "1"}
    for model in CatalogModel.objects.filter(active=True):
        record[f"m:{model.model_id}"] = "1" if model.free_tier_available else "0"
    for limit in RateLimit.objects.all():
        record[f"r:{limit.tier}:{limit.model_id}"] = _figures(limit.rpm, limit.tpm, limit.rpd)
    for spend in SpendLimit.objects.filter(enabled=True):
        record[f"s:{spend.tier}"] = str(int(spend.usd_per_10_minutes * MICRO))
    return record


# --- the connection ---------------------------------------------------------------------------

_clients: dict[str, redis.Redis] = {}


def client() -> redis.Redis | None:
    """The store's Redis (REDIS_URL), for writes and the agreement check; None without Redis (admission then reads
    the database)."""
    url = settings.REDIS_URL
    if not url:
        return None
    found = _clients.get(url)
    if found is None:
        found = _clients[url] = redis.Redis.from_url(
            url, socket_timeout=SYNC_TIMEOUT, socket_connect_timeout=SYNC_TIMEOUT, decode_responses=True
        )
    return found


# KEYS[1]: adm:k; ARGV: secret hash, value, ... Sets each unless it is a tombstone already (a tombstone is always set).
_SET_KEYS = """
local n = 0
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '-' or redis.call('HGET', KEYS[1], ARGV[i]) ~= '-' then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
"""

# KEYS[1]: a project's record; ARGV: field, value, ... Written only if the record does not exist (read-through).
_SET_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def _flat(mapping: dict[str, str]) -> list[str]:
    return [item for pair in mapping.items() for item in pair]


def _guarded(what: str):
    def wrap(function):
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except RedisError as error:
                logger.error("admission store: %s failed (%r); the next sync_admission repairs it", what, error)
                return None

        run.__name__ = function.__name__
        run.__doc__ = function.__doc__
        return run

    return wrap


# --- writes ---------------------------------------------------------------------------------------


def write_keys(records: dict[str, str], connection=None) -> None:
    connection = connection or client()
    if connection is None or not records:
        return
    items = list(records.items())
    for start in range(0, len(items), CHUNK):
        connection.eval(_SET_KEYS, 1, KEYS, *_flat(dict(items[start : start + CHUNK])))


def write_projects(pks: Iterable[int], connection=None) -> None:
    """Replace the records of `pks` by what the database holds now (a project that no longer exists: deleted)."""
    connection = connection or client()
    pks = list(pks)
    if connection is None or not pks:
        return
    records = project_records(pks)
    pipe = connection.pipeline(transaction=True)
    for pk in pks:
        pipe.delete(project_key(pk))
        if pk in records:
            pipe.hset(project_key(pk), mapping=records[pk])
    pipe.execute()


def write_catalog(connection=None) -> None:
    connection = connection or client()
    if connection is None:
        return
    pipe = connection.pipeline(transaction=True)
    pipe.delete(CATALOG)
    pipe.hset(CATALOG, mapping=catalog_record())
    pipe.execute()


def read_through(secret_hash: str, key_pk: int, project_pk: int) -> None:
    """After a check answered from the database found a valid key: write its records where none are written yet."""
    connection = client()
    if connection is None:
        return
    try:
        connection.eval(_SET_KEYS, 1, KEYS, secret_hash, key_value(key_pk, project_pk, False))
        record = project_records([project_pk]).get(project_pk)
        if record is not None:
            connection.eval(_SET_IF_ABSENT, 1, project_key(project_pk), *_flat(record))
        if not connection.hexists(CATALOG, "ok"):
            connection.eval(_SET_IF_ABSENT, 1, CATALOG, *_flat(catalog_record()))
    except RedisError as error:
        logger.warning("admission store: read-through of key %s failed (%r)", key_pk, error)


# --- what changes call ----------------------------------------------------------------------------


def _now_and_after_commit(now, after) -> None:
    if client() is None:
        return
    _guarded("invalidation")(now)()
    transaction.on_commit(_guarded("write-through")(after), robust=True)


def keys_changed(keys: Iterable[ApiKey]) -> None:
    """API keys created or revoked: a revoked key's record goes at once (no query: the key says it is revoked), and
    its tombstone is written after the commit; a new key's record is written after the commit."""
    keys = list(keys)
    revoked = [key.secret_hash for key in keys if key.revoked_at is not None]

    def now():
        if revoked:
            client().hdel(KEYS, *revoked)

    def after():
        write_keys(key_records(key_rows(ApiKey.objects.filter(pk__in=[key.pk for key in keys]))))

    _now_and_after_commit(now, after)


def key_deleted(secret_hash: str) -> None:
    """A key row deleted (not a product action: the admin, a test): it is never valid again."""
    _now_and_after_commit(lambda: client().hdel(KEYS, secret_hash), lambda: write_keys({secret_hash: REVOKED}))


def projects_changed(pks: Iterable[int]) -> None:
    """A project's tier, billing state, link, spend cap or overrides changed: its record goes at once (checks read the
    database until it is back) and is written from the database after the commit."""
    pks = list(pks)
    if not pks:
        return
    _now_and_after_commit(lambda: client().delete(*[project_key(pk) for pk in pks]), lambda: write_projects(pks))


def accounts_changed(pks: Iterable[int]) -> None:
    """A billing account's status changed: the records of the projects it pays for."""
    if client() is None:
        return
    projects = list(ProjectBilling.objects.filter(account_id__in=list(pks)).values_list("project_id", flat=True))
    projects_changed(projects)


def catalog_changed() -> None:
    """A model, rate limit or spend limit changed: the catalog's record goes at once (checks read the database until
    it is back) and is written from the database after the commit. Not written at once: a change that is rolled back
    would leave figures that never were committed."""
    _now_and_after_commit(lambda: client().delete(CATALOG), write_catalog)


# --- agreement ------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What `sync` found: per kind (keys, projects, catalog), records missing from Redis, differing, and in Redis
    without a row; `fixed`: how many of them it repaired."""

    missing: dict[str, int] = field(default_factory=lambda: {"keys": 0, "projects": 0, "catalog": 0})
    differing: dict[str, int] = field(default_factory=lambda: {"keys": 0, "projects": 0, "catalog": 0})
    extra: dict[str, int] = field(default_factory=lambda: {"keys": 0, "projects": 0, "catalog": 0})
    fixed: int = 0
    checked: dict[str, int] = field(default_factory=lambda: {"keys": 0, "projects": 0, "catalog": 0})

    @property
    def agrees(self) -> bool:
        return not any(self.missing.values()) and not any(self.differing.values()) and not any(self.extra.values())


def sync(*, fix: bool, flush: bool = False) -> SyncReport:
    """Compare every record with the database (and repair with `fix`). `flush` first deletes every record, so that
    the store is rebuilt from the database alone (checks meanwhile read the database)."""
    connection = client()
    if connection is None:
        raise RuntimeError("REDIS_URL is not set: admission reads the database, there is nothing to sync")
    report = SyncReport()
    if flush:
        _flush(connection)
    _sync_keys(connection, report, fix)
    _sync_projects(connection, report, fix)
    _sync_catalog(connection, report, fix)
    return report


def _flush(connection) -> None:
    doomed = [KEYS, CATALOG]
    for key in connection.scan_iter(match=f"{PROJECT_PREFIX}*", count=1000):
        doomed.append(key)
        if len(doomed) >= 1000:
            connection.delete(*doomed)
            doomed = []
    if doomed:
        connection.delete(*doomed)


def _sync_keys(connection, report: SyncReport, fix: bool) -> None:
    last = 0
    while True:
        rows = key_rows(ApiKey.objects.filter(pk__gt=last).order_by("pk")[:CHUNK])
        if not rows:
            break
        last = rows[-1][1]
        expected = key_records(rows)
        secrets = list(expected)
        held = dict(zip(secrets, connection.hmget(KEYS, secrets), strict=True))
        report.checked["keys"] += len(secrets)
        repair = {}
        for secret, value in expected.items():
            found = held[secret]
            if found == value:
                continue
            if found is None:
                report.missing["keys"] += 1
            else:
                report.differing["keys"] += 1
            repair[secret] = value
        if fix and repair:
            write_keys(repair, connection)
            report.fixed += len(repair)
    # Records of keys that have no row (deleted): tombstones, so that they admit nothing.
    cursor = 0
    while True:
        cursor, chunk = connection.hscan(KEYS, cursor, count=CHUNK)
        live = {secret for secret, value in chunk.items() if value != REVOKED}
        if live:
            known = set(ApiKey.objects.filter(secret_hash__in=list(live)).values_list("secret_hash", flat=True))
            gone = {secret: REVOKED for secret in live - known}
            report.extra["keys"] += len(gone)
            if fix and gone:
                write_keys(gone, connection)
                report.fixed += len(gone)
        if cursor == 0:
            break


def _sync_projects(connection, report: SyncReport, fix: bool) -> None:
    last = 0
    while True:
        pks = list(Project.objects.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:CHUNK])
        if not pks:
            break
        last = pks[-1]
        expected = project_records(pks)
        pipe = connection.pipeline(transaction=False)
        for pk in pks:
            pipe.hgetall(project_key(pk))
        held = dict(zip(pks, pipe.execute(), strict=True))
        report.checked["projects"] += len(pks)
        for pk in pks:
            found = held[pk]
            if found == expected[pk]:
                continue
            if not found:
                report.missing["projects"] += 1
            else:
                report.differing["projects"] += 1
            if fix and _repair_project(connection, pk):
                report.fixed += 1
    batch = []
    for key in connection.scan_iter(match=f"{PROJECT_PREFIX}*", count=CHUNK):
        pk = key[len(PROJECT_PREFIX) :]
        if pk.isdigit():
            batch.append(int(pk))
        if len(batch) >= CHUNK:
            _sync_extra_projects(connection, report, fix, batch)
            batch = []
    _sync_extra_projects(connection, report, fix, batch)


def _sync_extra_projects(connection, report: SyncReport, fix: bool, pks: list[int]) -> None:
    """Records of projects that have no row (deleted): one query per batch of scanned records."""
    if not pks:
        return
    gone = set(pks) - set(Project.objects.filter(pk__in=pks).values_list("pk", flat=True))
    report.extra["projects"] += len(gone)
    if fix and gone:
        connection.delete(*[project_key(pk) for pk in gone])
        report.fixed += len(gone)


def _repair_project(connection, pk: int) -> bool:
    """Write the project's record from the database unless a write-through touches it meanwhile (WATCH): that one is
    at least as new as what this read. True if written (or found right on the second look)."""
    with connection.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(project_key(pk))
            held = pipe.hgetall(project_key(pk))
            record = project_records([pk]).get(pk)
            if held == (record or {}):
                pipe.unwatch()
                return True
            pipe.multi()
            pipe.delete(project_key(pk))
            if record is not None:
                pipe.hset(project_key(pk), mapping=record)
            pipe.execute()
            return True
        except WatchError:
            return False


def _sync_catalog(connection, report: SyncReport, fix: bool) -> None:
    report.checked["catalog"] = 1
    found = connection.hgetall(CATALOG)
    if found == catalog_record():
        return
    if not found:
        report.missing["catalog"] += 1
    else:
        report.differing["catalog"] += 1
    if fix:
        write_catalog(connection)
        report.fixed += 1


# --- last use -------------------------------------------------------------------------------------

# KEYS[1]: adm:used. Takes the hash and empties it, atomically.
_TAKE_USED = """
local held = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return held
"""

# KEYS[1]: adm:used; ARGV: key pk, second, ... Puts back what could not be saved, unless a newer second is there.
_PUT_BACK_USED = """
for i = 1, #ARGV, 2 do
  local held = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or 0)
  if held < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


def flush_key_use() -> int:
    """Move the last use of each key that quota:check recorded in Redis to `ApiKey.last_used_at` (the job runner,
    every minute, so the keys page is at most a minute or two behind). Returns the number of keys updated."""
    from datetime import UTC, datetime

    from studio.models import LAST_USED_RESOLUTION

    connection = client()
    if connection is None:
        return 0
    held = connection.eval(_TAKE_USED, 1, USED)
    used = {int(held[i]): int(held[i + 1]) for i in range(0, len(held), 2)}
    if not used:
        return 0
    try:
        updated = 0
        with transaction.atomic():
            keys = ApiKey.objects.filter(pk__in=list(used)).only("pk", "last_used_at")
            changed = []
            for key in keys:
                moment = datetime.fromtimestamp(used[key.pk], UTC)
                if key.last_used_at is None or moment - key.last_used_at >= LAST_USED_RESOLUTION:
                    key.last_used_at = moment
                    changed.append(key)
            ApiKey.objects.bulk_update(changed, ["last_used_at"], batch_size=500)
            updated = len(changed)
        return updated
    except Exception:
        connection.eval(_PUT_BACK_USED, 1, USED, *[str(item) for pair in used.items() for item in pair])
        raise
