"""usage:report ingestion (R23): validate, rate and store a batch of events, exactly once.

Per batch: two lookups (keys, studio links) and the process's catalog snapshot (models and price
versions; a new price version is seen within CATALOG_TTL_SECONDS), pure validation and rating in
Python, then one write. On PostgreSQL the write is COPY into a temporary table and a single
statement that inserts the events (`ON CONFLICT (event_id) DO NOTHING`) and adds exactly the
inserted ones to the minute/hour/day rollups; a replay, even concurrent, inserts nothing and so
adds nothing. Elsewhere (SQLite, the embedded default) the same result comes from the ORM.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from studio.models import ApiKey, BillingState, Tier, User
from usage.catalog import get_catalog
from usage.models import UsageEvent, UsageRollup
from usage.rating import rate

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_TOKENS = 10_000_000  # more than any context window: a larger count is a fleet bug
OLDEST = timedelta(days=7)
NEWEST = timedelta(minutes=5)
DEADLOCK_RETRIES = 3
TokenCount = Annotated[int, Field(strict=True, ge=0, le=MAX_TOKENS)]


class EventIn(BaseModel):
    """One usage event as the fleet reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")]
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")]
    model: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    kind: Literal["generate", "count_tokens", "batch"]
    source: Literal["api", "studio"] = "api"
    status_code: Annotated[int, Field(strict=True, ge=100, le=599)]
    input_tokens: TokenCount
    output_tokens: TokenCount = 0
    cached_tokens: TokenCount = 0
    cache_token_hours: Annotated[Decimal, Field(ge=0, le=Decimal("1e12"), max_digits=20, decimal_places=6)] = Decimal(0)
    occurred_at: AwareDatetime


EVENT = TypeAdapter(EventIn)
EVENTS = TypeAdapter(list[EventIn])


@dataclass
class Report:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)

    def reject(self, index: int, event_id, errors: dict[str, list[str]]):
        self.rejected.append({"index": index, "event_id": event_id, "errors": errors})


def _pydantic_errors(error: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = defaultdict(list)
    for item in error.errors(include_url=False):
        errors[str(item["loc"][0]) if item["loc"] else "event"].append(item["msg"])
    return dict(errors)


def ingest(raw_events: list, *, now: datetime | None = None) -> Report:
    """Validate, rate and store `raw_events` (parsed JSON). Valid events are kept even when
    others of the batch are rejected; an event id seen before counts as a duplicate."""
    now = now or timezone.now()
    report = Report()
    valid: list[tuple[int, EventIn]] = []
    seen: set[str] = set()
    for index, event in _validated(raw_events, report):
        errors = {}
        if event.cached_tokens > event.input_tokens:
            errors["cached_tokens"] = ["Cached tokens are part of the input tokens: at most input_tokens."]
        if not now - OLDEST <= event.occurred_at <= now + NEWEST:
            errors["occurred_at"] = ["Outside the accepted window: at most 7 days old and 5 minutes ahead."]
        if errors:
            report.reject(index, event.event_id, errors)
        elif event.event_id in seen:
            report.duplicates += 1
        else:
            seen.add(event.event_id)
            valid.append((index, event))

    rows = _rate(valid, report, received_at=now)
    if rows:
        inserted = _store(rows)
        report.accepted = inserted
        report.duplicates += len(rows) - inserted
    return report


def _validated(raw_events: list, report: Report):
    """(index, event) for each valid event; the invalid ones are added to `report`.

    The whole list is validated at once (fast); only when some event is invalid is it done again
    one event at a time, to say which and why.
    """
    try:
        yield from enumerate(EVENTS.validate_python(raw_events))
        return
    except ValidationError:
        pass
    for index, raw in enumerate(raw_events):
        try:
            yield index, EVENT.validate_python(raw)
        except ValidationError as error:
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            report.reject(index, event_id if isinstance(event_id, str) else None, _pydantic_errors(error))


def _rate(valid, report: Report, *, received_at) -> list[tuple]:
    keys = ApiKey.objects.select_related("project").in_bulk({int(e.key_id) for _, e in valid})
    catalog = get_catalog()
    linked = set(User.objects.filter(studio_api_key_id__in=keys).values_list("studio_api_key_id", flat=True))

    rows = []
    for index, event in valid:
        key, model = keys.get(int(event.key_id)), catalog.models.get(event.model)
        price = catalog.price_at(event.model, event.occurred_at)
        errors = {}
        if key is None or (key.revoked_at is not None and key.revoked_at <= event.occurred_at):
            errors["key_id"] = ["Unknown API key, or revoked before the event occurred."]
        if model is None:
            errors["model"] = ["Unknown model."]
        elif price is None:
            errors["occurred_at"] = ["No price of this model was in force at that time."]
        elif event.cached_tokens and price.cached_input is None:
            errors["cached_tokens"] = ["This model has no context caching."]
        elif event.output_tokens and price.output is None:
            errors["output_tokens"] = ["This model produces no output tokens."]
        elif event.cache_token_hours and price.cache_storage is None:
            errors["cache_token_hours"] = ["This model has no context caching."]
        if errors:
            report.reject(index, event.event_id, errors)
            continue
        project = key.project
        rated = rate(
            kind=event.kind,
            status_code=event.status_code,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cached_tokens=event.cached_tokens,
            cache_token_hours=event.cache_token_hours,
            price=price,
            model=model,
            paid_project=project.tier != Tier.FREE and project.billing_state == BillingState.ACTIVE,
            studio=event.source == "studio",
            studio_key_linked=key.pk in linked,
        )
        # A plain tuple in COLUMNS order: building model instances cost more than rating (bench/README.md).
        rows.append(
            (
                event.event_id,
                project.pk,
                key.pk,
                model.pk,
                price.pk,
                event.kind,
                event.source,
                event.status_code,
                event.input_tokens,
                event.output_tokens,
                event.cached_tokens,
                event.cache_token_hours,
                event.occurred_at,
                received_at,
                rated.billable,
                rated.counts_against_quota,
                rated.cost,
                rated.cost_input,
                rated.cost_output,
                rated.cost_cached,
                rated.cost_storage,
            )
        )
    return rows


def _store(rows: list[tuple]) -> int:
    """Insert new events (tuples in COLUMNS order) and add them to the rollups; returns how many were new."""
    rows.sort(key=lambda row: row[0])  # by event_id: one lock order for concurrent batches
    for attempt in range(DEADLOCK_RETRIES):
        try:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    return _store_postgres(rows)
                return _store_orm(rows)
        except OperationalError:
            if attempt == DEADLOCK_RETRIES - 1:
                raise
            log.warning("usage ingestion: retrying a batch of %d after a lock conflict", len(rows))
    raise AssertionError("unreachable")


COLUMNS = [
    "event_id", "project_id", "api_key_id", "model_id", "price_id", "kind", "source", "status_code",
    "input_tokens", "output_tokens", "cached_tokens", "cache_token_hours", "occurred_at", "received_at",
    "billable", "counts_against_quota", "cost", "cost_input", "cost_output", "cost_cached", "cost_storage",
]  # fmt: skip
SUMS = ["requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cache_token_hours", "cost"]

CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS usage_staging ON COMMIT DELETE ROWS
AS SELECT {", ".join(COLUMNS)} FROM usage_usageevent WITH NO DATA
"""  # noqa: S608 - constant column names
INSERT_AND_ROLL_UP = f"""
WITH inserted AS (
    INSERT INTO usage_usageevent ({", ".join(COLUMNS)})
    SELECT {", ".join(COLUMNS)} FROM usage_staging ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING project_id, api_key_id, model_id, kind, status_code, occurred_at,
              input_tokens, output_tokens, cached_tokens, cache_token_hours, cost
), buckets AS (
    SELECT g.granularity,
           date_trunc(g.granularity, i.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket_start,
           i.project_id, i.api_key_id, i.model_id,
           count(*) AS requests, count(*) FILTER (WHERE i.status_code >= 400) AS errors,
           sum(i.input_tokens) AS input_tokens, sum(i.output_tokens) AS output_tokens,
           sum(i.cached_tokens) AS cached_tokens, sum(i.cache_token_hours) AS cache_token_hours, sum(i.cost) AS cost
    FROM inserted i CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g(granularity)
    WHERE i.kind <> 'count_tokens'
    GROUP BY 1, 2, 3, 4, 5
), rolled AS (
    INSERT INTO usage_usagerollup (granularity, bucket_start, project_id, api_key_id, model_id, {", ".join(SUMS)})
    SELECT * FROM buckets ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (granularity, bucket_start, project_id, api_key_id, model_id) DO UPDATE SET
        {", ".join(f"{name} = usage_usagerollup.{name} + EXCLUDED.{name}" for name in SUMS)}
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM rolled)
"""  # noqa: S608 - only constant column names are interpolated


def _store_postgres(rows: list[tuple]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(CREATE_STAGING)
        raw = cursor.cursor  # psycopg 3: COPY is much faster than INSERT for a batch
        with raw.copy(f"COPY usage_staging ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(INSERT_AND_ROLL_UP)
        inserted, _ = cursor.fetchone()
    return inserted


def _bucket(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    if granularity == "minute":
        return moment.replace(second=0, microsecond=0)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _store_orm(rows: list[tuple]) -> int:
    rows = [UsageEvent(**dict(zip(COLUMNS, row, strict=True))) for row in rows]
    ids = [row.event_id for row in rows]
    known = set()
    for start in range(0, len(ids), 500):
        known.update(
            UsageEvent.objects.filter(event_id__in=ids[start : start + 500]).values_list("event_id", flat=True)
        )
    new = [row for row in rows if row.event_id not in known]
    UsageEvent.objects.bulk_create(new, batch_size=500)
    sums: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    for row in new:
        if row.kind == "count_tokens":
            continue
        for granularity in ("minute", "hour", "day"):
            total = sums[
                (granularity, _bucket(row.occurred_at, granularity), row.project_id, row.api_key_id, row.model_id)
            ]
            total["requests"] += 1
            total["errors"] += row.status_code >= 400
            total["input_tokens"] += row.input_tokens
            total["output_tokens"] += row.output_tokens
            total["cached_tokens"] += row.cached_tokens
            total["cache_token_hours"] += row.cache_token_hours
            total["cost"] += row.cost
    for (granularity, bucket, project_id, key_id, model_id), total in sorted(
        sums.items(), key=lambda item: str(item[0])
    ):
        where = {
            "granularity": granularity,
            "bucket_start": bucket,
            "project_id": project_id,
            "api_key_id": key_id,
            "model_id": model_id,
        }
        updated = UsageRollup.objects.filter(**where).update(**{name: F(name) + value for name, value in total.items()})
        if not updated:
            UsageRollup.objects.create(**where, **total)
    return len(new)
