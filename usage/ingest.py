"""usage:report ingestion (R23): validate, rate and store a batch of events, exactly once.

Per batch: one lookup query (keys, their projects' billing history, the keys' studio-link history:
LOOKUPS) and the process's catalog snapshot (models and price versions; a new price version is seen
within CATALOG_TTL_SECONDS), pure validation and rating in Python (costs in whole nano-dollars,
usage.rating), then one write. On PostgreSQL the write is a binary COPY into a temporary table (the
costs as bigint nano-dollars, turned into the events' USD columns in SQL) and a single statement
that inserts the events (unique by (event_key, month), the key a 16-byte digest of the event id
computed in Python, usage.models.event_key: the table is partitioned by Pacific month,
usage.partitions) and appends what they add to each minute (RollupDelta, rolled up into the
minute/hour/day rollups and the hourly peaks by usage.fold, within ROLLUP_FOLD_SECONDS), and adds
what each billed event costs to its statement line in `PendingCharge` (usage.charging moves it to
the ledger). In the same statement, events within REPLAY_WINDOW of a month start first claim their
id's key near that boundary (`usage_usageeventguard`; each event's month and boundary are computed in
Python and staged with it), so that a replay whose occurred_at moved into the next or previous month
is a replay too.

Two statements, one per case. The usual batch, all new, is written by INSERT_NEW: plain inserts
(each unique key checked once, as the row goes in), the minute sums read from the staged rows and
the statement lines summed in Python (`pending_lines`). A replayed id, or one a concurrent batch is
inserting, fails it with unique_violation; once that is rolled back, the batch is written again by
INSERT_AND_ROLL_UP, which claims and inserts with `ON CONFLICT DO NOTHING` and sums what the
inserted events add from them. Either way a replay, even concurrent, inserts nothing and so adds
nothing.

Elsewhere (SQLite, the embedded default) the same result comes from the ORM, which updates the
rollups and usage.peaks the hourly peaks in the ingestion transaction itself.

Whether an event is billed, and to which billing account, is decided by the state when it
occurred, not when it is reported (SPEC §9): the project's `BillingPeriod` in force at
`occurred_at`, and for studio usage a `StudioKeyLink` of the event's key in force then.

Two kinds of event: a request (generate, count_tokens, batch) with its tokens, and cache storage
(`cache_storage`) with the token-hours a context cache was kept. Storage is rated and rolled up
(token-hours, cost) but is not a request: it adds nothing to the rollups' request counts and is
never admitted through quota:check.

A request may say how much of its prompt was audio (`audio_input_tokens`, part of `input_tokens`)
and how much of that was read from a cache (`cached_audio_tokens`, part of `cached_tokens` too):
audio is rated at the model's audio prices, and kept as its own counts on the event and in the
rollups. A model without an audio price refuses audio counts.

A request admitted by quota:check may carry the `reservation_id` it was given: once the new events
are stored, usage.settlement replaces the estimates admission reserved by their actual input tokens
and cost (replays settle nothing).

The write is retried only when PostgreSQL says that trying again can succeed (RETRYABLE: SQLSTATE
40001, 40P01, 55P03), a few times with a short jittered pause, each retry logged with its cause;
any other error is raised at once, except "no partition of relation found for row" (23514): the
batch's partitions are then created (usage.partitions.ensure_for) and the write tried again (twice at
most: PARTITION_REPAIRS). A
unique_violation (23505) of the all-new statement is not an error but a replay (above): the batch
is written again by the statement for replays, once, without counting an attempt. So is a batch that
finds its connection's staging tables gone (42P01, after a DISCARD TEMP): they are made again.
"""

import logging
import random
import time
import weakref
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, NamedTuple

from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from billing.models import BillingPeriod
from studio.models import ActorKind, ApiKey, AuditEvent, StudioKeyLink
from usage import partitions
from usage.catalog import get_catalog
from usage.fold import SUMS, fold_if_due
from usage.models import PendingCharge, UsageEvent, UsageRollup, event_key
from usage.peaks import update_peaks
from usage.rating import rate, usd
from usage.settlement import settle_after_commit

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_TOKENS = 10_000_000  # more than any context window: a larger count is a fleet bug
OLDEST = timedelta(days=7)
NEWEST = timedelta(minutes=5)
# Two reports of one event that are both acceptable at one moment lie at most this far apart: the zone around each
# month start in which usage.partitions guards an id across the boundary.
assert partitions.REPLAY_WINDOW == OLDEST + NEWEST and partitions.OLDEST == OLDEST
# SQLSTATEs after which the same write can succeed: serialization failure, deadlock detected, lock
# not available (lock_timeout, NOWAIT). Anything else (a constraint, a dropped connection, a
# statement timeout) fails the batch at once; the fleet's retry of the call is safe (event ids).
RETRYABLE = {"40001": "serialization failure", "40P01": "deadlock detected", "55P03": "lock not available"}
# check_violation: also "no partition of relation … found for row", repaired by creating the partitions. Twice at most:
# a batch that found them made meanwhile by another process once failed the same way again (CI, four batches at once
# for a month without its partition; not reproduced in 25 runs alone): a second repair gives it one more write.
PARTITION_REPAIRS = 2
CHECK_VIOLATION = "23514"
STORE_ATTEMPTS = 4
RETRY_PAUSE_SECONDS = 0.02  # doubled per attempt, jittered: 10-20 ms, 20-40 ms, 40-80 ms
TokenCount = Annotated[int, Field(strict=True, ge=0, le=MAX_TOKENS)]
NoTokens = Annotated[int, Field(strict=True, ge=0, le=0, description="0 tokens: storage is not a request.")]
KINDS = ("generate", "count_tokens", "batch", "cache_storage")
RESERVATION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def _in_utc(moment: datetime) -> datetime:
    """The same instant with the standard library's UTC: pydantic's own tzinfo makes every later comparison with a
    database datetime, and every .timestamp(), call back into it (0.7 against 0.07 µs), several times per event."""
    return moment.astimezone(UTC)


# An RFC 3339 time with an offset, kept in UTC.
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")] = Field(
        description="The fleet's unique id of this event (printable ASCII, no spaces): a replay of the same id "
        "is a duplicate and changes nothing. Time-ordered ids in canonical UUID form (UUIDv7, lowercase, "
        "hyphenated) are stored fastest as the month's events grow.",
        examples=["evt-7f3c2a"],
    )
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] = Field(
        description="The API key's id, as quota:check answered it (`key_id`).", examples=["1234"]
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The model's id in the catalog.", examples=["gemini-2.5-flash"]
    )
    source: Literal["api", "studio"] = Field(
        "api", description="`studio`: usage of the studio itself, billed only through a key linked to the studio."
    )
    occurred_at: Moment = Field(
        description="When it happened: RFC 3339 with a UTC offset, at most 7 days ago and 5 minutes ahead. "
        "Rated at the prices in force then.",
        examples=["2026-11-28T05:00:00Z"],
    )


class RequestEventIn(_Event):
    """A model request as the fleet served it (`generate`, `count_tokens`, `batch`)."""

    kind: Literal["generate", "count_tokens", "batch"] = Field(
        description="`count_tokens` is free and not counted against quota; `batch` pays the batch price."
    )
    status_code: Annotated[int, Field(strict=True, ge=100, le=599)] = Field(
        description="The HTTP status the request was answered with: 400 and 500 families are free but count "
        "against quota."
    )
    input_tokens: TokenCount = Field(description="Prompt tokens, cached ones included (tokens).")
    output_tokens: TokenCount = Field(0, description="Output tokens (tokens).")
    cached_tokens: TokenCount = Field(
        0, description="Prompt tokens read from a context cache (tokens, at most input_tokens)."
    )
    audio_input_tokens: TokenCount = Field(
        0,
        description="Prompt tokens that are audio, cached ones included (tokens): part of input_tokens, not "
        "in addition to it. Priced at the model's audio input price; refused for a model without one.",
    )
    cached_audio_tokens: TokenCount = Field(
        0,
        description="Audio prompt tokens read from a context cache (tokens): part of both cached_tokens and "
        "audio_input_tokens. Priced at the model's cached audio input price.",
    )
    cache_token_hours: Annotated[Decimal, Field(ge=0, le=0, max_digits=20, decimal_places=6)] = Field(
        Decimal(0), description="0 (token-hours): report cache storage as an event of kind `cache_storage`."
    )
    reservation_id: Annotated[str, StringConstraints(pattern=RESERVATION_ID_PATTERN)] | None = Field(
        None,
        description="The `reservation_id` quota:check answered when it admitted this request: the estimate it "
        "counted against the TPM and spend limits is then replaced by this event's actual input tokens and cost. "
        "Without it (or once the reservation has lapsed) the actual usage is counted in addition to the estimate.",
        examples=["r1_6b0fed33_4b0_168_327f1df98d20faa9"],
    )


class StorageEventIn(_Event):
    """Cache storage: the token-hours context caches were kept. Rated, not a request."""

    kind: Literal["cache_storage"] = Field(description="Cache storage: rated, never counted against quota.")
    cache_token_hours: Annotated[Decimal, Field(gt=0, le=Decimal("1e12"), max_digits=20, decimal_places=6)] = Field(
        description="Cached tokens × hours kept (token-hours, up to 6 decimals), priced per 1M token-hours. A "
        "string keeps every digit; a JSON number is read as a double (about 15 significant digits).",
        examples=["1500000.5"],
    )
    input_tokens: NoTokens = 0
    output_tokens: NoTokens = 0
    cached_tokens: NoTokens = 0
    audio_input_tokens: NoTokens = 0
    cached_audio_tokens: NoTokens = 0
    status_code: ClassVar[int] = 200  # stored as such: storage is never a failed request
    reservation_id: ClassVar[None] = None  # storage is never admitted, so never reserved


AnyEvent = Annotated[RequestEventIn | StorageEventIn, Field(discriminator="kind")]
EVENT = TypeAdapter(AnyEvent)
EVENTS = TypeAdapter(list[AnyEvent])
REQUEST_EVENT = TypeAdapter(RequestEventIn)


class _ValidBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # as usage:report reads a body: other members are ignored

    events: Annotated[list[AnyEvent], Field(max_length=MAX_BATCH)]


VALID_BODY = TypeAdapter(_ValidBody)


def valid_events(body: bytes) -> list | None:
    """The events of a usage:report body (JSON) when all of them are valid, the usual case: parsed and validated in
    one pass by pydantic's own JSON parser, without a Python dict per event (0.5 ms less per 1,000). None when
    anything about the body is wrong: the caller then parses it and says what (`ingest` of the parsed events)."""
    if b"NaN" in body or b"Infinity" in body:
        return None  # not JSON, yet pydantic's parser takes them; inside a string, the other path is right too
    try:
        return VALID_BODY.validate_json(body).events
    except ValidationError:
        return None


# Clearer words, in the error path only, for what the schema refuses about the two kinds.
COMBINATION_ERRORS = {
    ("request", "cache_token_hours"): "Report cache storage as its own event of kind cache_storage.",
    ("cache_storage", "input_tokens"): "A cache_storage event has no tokens: leave this out or send 0.",
    ("cache_storage", "output_tokens"): "A cache_storage event has no tokens: leave this out or send 0.",
    ("cache_storage", "cached_tokens"): "A cache_storage event has no tokens: leave this out or send 0.",
    ("cache_storage", "audio_input_tokens"): "A cache_storage event has no tokens: leave this out or send 0.",
    ("cache_storage", "cached_audio_tokens"): "A cache_storage event has no tokens: leave this out or send 0.",
    ("cache_storage", "status_code"): "A cache_storage event is not a request: it has no status_code.",
    ("cache_storage", "reservation_id"): "A cache_storage event is never admitted: it has no reservation_id.",
}
KIND_ERROR = "Input should be " + ", ".join(f"'{kind}'" for kind in KINDS[:-1]) + f" or '{KINDS[-1]}'"


@dataclass
class Report:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)

    def reject(self, index: int, event_id, errors: dict[str, list[str]]):
        self.rejected.append({"index": index, "event_id": event_id, "errors": errors})


def _pydantic_errors(error: ValidationError, raw) -> dict[str, list[str]]:
    """{field: [messages]} of one event."""
    items = error.errors(include_url=False)
    if isinstance(raw, dict) and any(item["type"].startswith("union_tag_") for item in items):
        # No kind, or an unknown one: judge it as a request, so that every other field is named too.
        try:
            REQUEST_EVENT.validate_python(raw)
        except ValidationError as as_request:
            items = as_request.errors(include_url=False)
        items = [{"loc": ("request", *item["loc"]), "msg": item["msg"], "type": item["type"]} for item in items]
    errors: dict[str, list[str]] = defaultdict(list)
    for item in items:
        loc = item["loc"]
        if loc and loc[0] in KINDS:  # the discriminated union puts the kind first
            loc = ("cache_storage" if loc[0] == "cache_storage" else "request", *loc[1:])
        if len(loc) < 2:
            errors["event"].append(item["msg"])
            continue
        kind, name = loc[0], str(loc[1])
        if name == "kind":
            message = KIND_ERROR if item["type"] == "literal_error" else item["msg"]
        elif item["type"] in ("less_than_equal", "extra_forbidden"):
            message = COMBINATION_ERRORS.get((kind, name), item["msg"])
        else:
            message = item["msg"]
        errors[name].append(message)
    return dict(errors)


def ingest(raw_events: list, *, now: datetime | None = None, reporter=None, validated: bool = False) -> Report:
    """Validate, rate and store `raw_events` (parsed JSON; `validated`: events from `valid_events`). Valid events
    are kept even when others of the batch are rejected; an event id seen before counts as a duplicate.

    `reporter`, the fleet token of a usage:report call: a report that stored new events gets one audit row
    (usage.report, by the fleet; X10), per batch, never per event: the events are their own append-only record.
    Written in the batch's transaction: the row and the events are stored together, or neither."""
    now = now or timezone.now()
    report = Report()
    valid: list[tuple[int, RequestEventIn | StorageEventIn]] = []
    seen: set[str] = set()
    reservations: dict[str, str] = {}  # event id -> the reservation its usage settles
    for index, event in enumerate(raw_events) if validated else _validated(raw_events, report):
        errors = {}
        if event.cached_tokens > event.input_tokens:
            errors["cached_tokens"] = ["Cached tokens are part of the input tokens: at most input_tokens."]
        if event.audio_input_tokens or event.cached_audio_tokens:
            errors.update(_audio_errors(event))
        if not now - OLDEST <= event.occurred_at <= now + NEWEST:
            errors["occurred_at"] = ["Outside the accepted window: at most 7 days old and 5 minutes ahead."]
        if errors:
            report.reject(index, event.event_id, errors)
        elif event.event_id in seen:
            report.duplicates += 1
        else:
            seen.add(event.event_id)
            valid.append((index, event))
            if event.reservation_id is not None:
                reservations[event.event_id] = event.reservation_id

    rows = _rate(valid, report)

    def audit(inserted: list[str]) -> None:  # in the batch's transaction, once its events are written
        if reporter is not None and inserted:
            after = {
                "accepted": len(inserted),
                "duplicates": report.duplicates + len(rows) - len(inserted),
                "rejected": len(report.rejected),
            }
            AuditEvent.record(actor=None, actor_kind=ActorKind.FLEET, action="usage.report", obj=reporter, after=after)

    if rows:
        inserted = _store(rows, received_at=now, audit=audit)
        report.accepted = len(inserted)
        report.duplicates += len(rows) - len(inserted)
        settle_after_commit(rows, ROW, inserted, reservations)  # new events only: a replay changes nothing
    return report


def _audio_errors(event) -> dict[str, list[str]]:
    """The audio counts must nest in the others (each count includes the classes within it)."""
    audio, cached_audio = event.audio_input_tokens, event.cached_audio_tokens
    errors: dict[str, list[str]] = {}
    if audio > event.input_tokens:
        errors["audio_input_tokens"] = ["Audio tokens are part of the input tokens: at most input_tokens."]
    elif audio - cached_audio > event.input_tokens - event.cached_tokens:
        errors["audio_input_tokens"] = [
            "Audio tokens not read from a cache are part of the input tokens not read from a cache: "
            "audio_input_tokens − cached_audio_tokens is at most input_tokens − cached_tokens."
        ]
    if cached_audio > audio:
        errors.setdefault("cached_audio_tokens", []).append(
            "Cached audio tokens are part of the audio tokens: at most audio_input_tokens."
        )
    if cached_audio > event.cached_tokens:
        errors.setdefault("cached_audio_tokens", []).append(
            "Cached audio tokens are part of the cached tokens: at most cached_tokens."
        )
    return errors


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
            report.reject(index, event_id if isinstance(event_id, str) else None, _pydantic_errors(error, raw))


class _Key(NamedTuple):
    id: int
    project_id: int
    revoked_at: datetime | None


# What rating a batch needs to know, in one round trip (three ORM queries cost ~2 ms of Python per batch, this one
# ~0.2): its keys; the billing history of their projects; the studio-link history of the keys. One row shape for the
# three: (part, id, id, id, time, time); PostgreSQL types a UNION's columns pairwise from the first, so the first has
# no untyped NULL where a later one has a time.
LOOKUPS = f"""
SELECT 0, k.id, k.project_id, NULL, k.revoked_at, CAST(NULL AS timestamp with time zone)
FROM {ApiKey._meta.db_table} k
WHERE k.id IN ({{keys}})
UNION ALL
SELECT 1, b.project_id, b.account_id, b.id, b.starts_at, NULL
FROM {BillingPeriod._meta.db_table} b
WHERE b.project_id IN (SELECT project_id FROM {ApiKey._meta.db_table} WHERE id IN ({{keys}}))
UNION ALL
SELECT 2, s.api_key_id, NULL, NULL, s.linked_at, s.unlinked_at
FROM {StudioKeyLink._meta.db_table} s
WHERE s.api_key_id IN ({{keys}})
ORDER BY 1, 2, 5, 4
"""  # noqa: S608 - table names from the models; the ids are parameters


def _aware(value):
    """A time as a raw cursor returns it: PostgreSQL an aware datetime, SQLite text (or a naive datetime) in the
    connection's time zone."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=connection.timezone)


def _lookups(key_ids: set[int]) -> tuple[dict[int, _Key], "_History"]:
    """The batch's keys by id, and their billing and studio-link history."""
    keys: dict[int, _Key] = {}
    history = _History()
    if not key_ids:
        return keys, history
    ids = sorted(key_ids)
    with connection.cursor() as cursor:
        cursor.execute(LOOKUPS.format(keys=", ".join(["%s"] * len(ids))), ids * 3)
        found = cursor.fetchall()
    for part, first, second, _, moment, other in found:
        if part == 0:
            keys[first] = _Key(first, second, _aware(moment))
        elif part == 1:
            starts, accounts = history.periods.setdefault(first, ([], []))
            starts.append(_aware(moment))
            accounts.append(second)
        else:
            history.studio[first].append((_aware(moment), _aware(other)))
    return keys, history


class _History:
    """Billing history of the batch's projects (in order of start) and studio-link history of its keys, read once
    per batch: whether an event is billed, and to whom, is decided by the state when it occurred (SPEC §9)."""

    def __init__(self):
        self.periods: dict[int, tuple[list, list]] = {}  # project id -> (starts, accounts)
        self.studio: dict[int, list] = defaultdict(list)  # key id -> [(linked at, unlinked at or None)]

    def billed_to(self, project_id: int, moment) -> int | None:
        """The billing account that paid for the project's usage at `moment` (None: not billed)."""
        starts, accounts = self.periods.get(project_id, ((), ()))
        at = bisect_right(starts, moment) - 1
        return accounts[at] if at >= 0 else None

    def studio_linked(self, key_id: int, moment) -> bool:
        """Was the key linked to the studio (by anyone) at `moment`?"""
        return any(start <= moment and (end is None or moment < end) for start, end in self.studio.get(key_id, ()))


def _rate(valid, report: Report) -> list[tuple]:
    """Rated events (tuples in ROW order); the invalid ones are added to `report`."""
    keys, history = _lookups({int(e.key_id) for _, e in valid})
    catalog = get_catalog()
    tariffs = catalog.tariffs
    zones = partitions.Zones()

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
        elif event.audio_input_tokens and price.audio_input is None:
            errors["audio_input_tokens"] = [
                f"{model.pk} has no audio input price: report its audio as input_tokens only, without "
                "audio_input_tokens."
            ]
        elif event.cached_audio_tokens and price.cached_audio_input is None:
            errors["cached_audio_tokens"] = [
                f"{model.pk} has no cached audio input price: report its cached audio as cached_tokens only, "
                "without cached_audio_tokens."
            ]
        if errors:
            report.reject(index, event.event_id, errors)
            continue
        # Plain attributes rather than .pk (a property with a lookup): this loop runs for every event.
        project_id = key.project_id
        occurred_at = event.occurred_at
        account_id = history.billed_to(project_id, occurred_at)
        rated = rate(
            kind=event.kind,
            status_code=event.status_code,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cached_tokens=event.cached_tokens,
            cache_token_hours=event.cache_token_hours,
            audio_input_tokens=event.audio_input_tokens,
            cached_audio_tokens=event.cached_audio_tokens,
            price=price,
            model=model,
            prices=tariffs[price.id],
            paid_project=account_id is not None,
            studio=event.source == "studio",
            studio_key_linked=event.source == "studio" and history.studio_linked(key.id, event.occurred_at),
        )
        # A plain tuple in ROW order: building model instances cost more than rating (bench/README.md).
        rows.append(
            (
                event.event_id,
                project_id,
                key.id,
                model.model_id,
                price.id,
                event.kind,
                event.source,
                event.status_code,
                event.input_tokens,
                event.output_tokens,
                event.cached_tokens,
                event.cache_token_hours or 0,  # an int 0 rather than Decimal 0: COPY writes it 10× faster
                event.occurred_at,
                rated.billable,
                rated.counts_against_quota,
                rated.cost_nanos,
                rated.input_nanos,
                rated.output_nanos,
                rated.cached_nanos,
                rated.storage_nanos,
                event.audio_input_tokens,
                event.cached_audio_tokens,
                rated.audio_nanos,
                rated.cached_audio_nanos,
                account_id if rated.billable else None,
                rated.long_prompt,
                *zones.of(occurred_at),  # its month, and the month start it lies near (if it does)
                event_key(event.event_id),
            )
        )
    return rows


def _store(rows: list[tuple], *, received_at: datetime, audit=None) -> list[str]:
    """Insert new events (tuples in ROW order) and what they add to the rollups (PostgreSQL: appended, then
    folded by usage.fold); returns the ids of the new ones. `audit(inserted)`, if given, is called in the same
    transaction once they are written."""
    rows.sort(key=lambda row: row[KEY])  # by event_key: one lock order for concurrent batches
    postgres = connection.vendor == "postgresql"
    lines = pending_lines(rows) if postgres else None  # None: the batch may hold replays (INSERT_AND_ROLL_UP)
    attempt, repairs, restaged = 0, 0, False
    while True:
        attempt += 1
        try:
            with transaction.atomic():
                if postgres:
                    inserted = _store_postgres(rows, lines, received_at)
                else:
                    inserted = _store_orm(rows, received_at)
                    update_peaks(rows, inserted, ROW)
                if audit is not None:
                    audit(inserted)
            if postgres and connection.get_autocommit():
                # That transaction, the outermost, made the staging tables (or found them) and committed: they stay.
                _staging_made.add(connection.connection)
            if inserted:
                fold_if_due()  # the batch is stored: roll it up (with others), unless that was done a moment ago
            return inserted
        except DatabaseError as error:
            cause = error.__cause__  # Django wraps the driver's error, which carries the SQLSTATE
            sqlstate = getattr(cause, "sqlstate", None)
            if sqlstate == UNDEFINED_TABLE and connection.connection in _staging_made and not restaged:
                # The staging tables are gone (DISCARD TEMP; a pooler that hands out another server connection per
                # transaction): make them again.
                _staging_made.discard(connection.connection)
                restaged, attempt = True, attempt - 1
                log.info("usage ingestion: this connection's staging tables are gone; making them again")
                continue
            if sqlstate == UNIQUE_VIOLATION and lines is not None:
                # An id of the batch is stored already (a replay), or being stored by a concurrent batch: write
                # the batch again, keeping only what is new. Not an attempt: this happens to every replay.
                lines, attempt = None, attempt - 1
                log.debug("usage ingestion: a batch of %d events holds replayed ids", len(rows))
                continue
            if sqlstate == CHECK_VIOLATION and repairs < PARTITION_REPAIRS:
                # A month without its partition (the job that makes them ahead did not run): make them.
                # Another process may have made them meanwhile (nothing created here): the write is tried again.
                repairs, attempt = repairs + 1, attempt - 1
                created = partitions.ensure_for(row[OCCURRED_AT] for row in rows)
                log.warning(
                    "usage ingestion: a batch of %d events found no partition for its month; created %s, retrying",
                    len(rows),
                    ", ".join(created) or "none (made meanwhile)",
                    extra={"sqlstate": sqlstate},
                )
                continue
            if sqlstate not in RETRYABLE or attempt == STORE_ATTEMPTS:
                raise
            pause = RETRY_PAUSE_SECONDS * 2 ** (attempt - 1) * random.uniform(0.5, 1)
            log.warning(
                "usage ingestion: a batch of %d events failed with SQLSTATE %s (%s): %s; attempt %d of %d, "
                "retrying in %.0f ms",
                len(rows),
                sqlstate,
                RETRYABLE[sqlstate],
                " ".join(str(cause).split()),  # the server's message and its context, on one line
                attempt,
                STORE_ATTEMPTS,
                pause * 1000,
                extra={"sqlstate": sqlstate, "attempt": attempt},
            )
            time.sleep(pause)


# A rated event, as ingestion passes it on (COPY, pending_lines, usage.settlement, usage.peaks): a plain tuple. Costs
# are whole nano-dollars (usage.rating), the event's USD columns are computed from them in SQL (EVENT_VALUES). The
# month and boundary, computed once per event (usage.partitions.Zones): the Pacific month it occurred in (the partition
# key, and the statement month of its lines) and the month start whose REPLAY_WINDOW it lies in, if any (its claim);
# last, the key its id is unique by (usage.models.event_key).
ROW = [
    "event_id", "project_id", "api_key_id", "model_id", "price_id", "kind", "source", "status_code",
    "input_tokens", "output_tokens", "cached_tokens", "cache_token_hours", "occurred_at",
    "billable", "counts_against_quota", "cost_nanos", "input_nanos", "output_nanos", "cached_nanos", "storage_nanos",
    "audio_input_tokens", "cached_audio_tokens", "audio_nanos", "cached_audio_nanos", "account_id", "long_prompt",
    "month", "boundary", "event_key",
]  # fmt: skip
KEY, OCCURRED_AT = ROW.index("event_key"), ROW.index("occurred_at")
# The event table's columns that ingestion writes, and each one's value.
NANOS_OF = {
    "cost": "cost_nanos", "cost_input": "input_nanos", "cost_output": "output_nanos", "cost_cached": "cached_nanos",
    "cost_storage": "storage_nanos", "cost_audio": "audio_nanos", "cost_cached_audio": "cached_audio_nanos",
}  # fmt: skip
COLUMNS = [name for name in ROW if name not in NANOS_OF.values() and name != "boundary"] + ["received_at", *NANOS_OF]
EVENT_VALUES = [
    "%(received_at)s" if name == "received_at" else f"{NANOS_OF[name]} * 0.000000001" if name in NANOS_OF else name
    for name in COLUMNS
]
# The rollups' sums are usage.fold.SUMS. Audio stays its own SKU in them (its tokens are also in input_tokens and
# cached_tokens).

# A statement line: account × project × model × price version × Pacific month × SKU × batch × long prompt.
PENDING_KEY = ["account_id", "project_id", "model_id", "price_id", "month", "sku", "batch", "long_prompt"]
PENDING_SUMS = ["quantity", "amount_nanos", "events", "first_occurred_at", "last_occurred_at"]

# The batch as COPY sends it (binary): ROW, in the event table's types, nano-dollars as bigint. Month and boundary
# come from Python (usage.partitions.Zones: in SQL, with their time-zone conversions, they cost about a third of the
# statement).
STAGED = [
    "month AS boundary" if name == "boundary" else name if name in COLUMNS else f"0::bigint AS {name}" for name in ROW
]
CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS usage_staging ON COMMIT DELETE ROWS
AS SELECT {", ".join(STAGED)} FROM usage_usageevent WITH NO DATA
"""  # noqa: S608 - constant column names
CREATE_PENDING_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS pending_staging ON COMMIT DELETE ROWS
AS SELECT {", ".join(PENDING_KEY)}, {", ".join(PENDING_SUMS)} FROM usage_pendingcharge WITH NO DATA
"""  # noqa: S608 - constant column names
# The staging tables are made once per connection (one round trip) and empty themselves at every commit or rollback:
# a batch that is not inside a caller's transaction finds them empty. Inside one (the demo's loader, tests) the
# previous batch's rows may still be there, and are deleted first.
PREPARE_STAGING = f"{CREATE_STAGING}; {CREATE_PENDING_STAGING}"
EMPTY_STAGING = "DELETE FROM usage_staging; DELETE FROM pending_staging"
# The database connections (psycopg's) whose staging tables exist: made in a batch's own transaction, which
# committed (inside a caller's transaction, which may yet roll back with them, they are made or found every time).
_staging_made = weakref.WeakSet()
# A one-time filter on the events' insert: the claims are made before the first event is inserted (as in every
# batch), so that two batches meeting on an id near a month start wait for each other in one order, not deadlock.
CLAIMS_FIRST = "(SELECT count(*) FROM claimed) >= 0"
# What a batch's new events add to the pending statement lines.
ADD_TO_PENDING = f"""
    ON CONFLICT ({", ".join(PENDING_KEY)}) DO UPDATE SET
        quantity = usage_pendingcharge.quantity + EXCLUDED.quantity,
        amount_nanos = usage_pendingcharge.amount_nanos + EXCLUDED.amount_nanos,
        events = usage_pendingcharge.events + EXCLUDED.events,
        first_occurred_at = LEAST(usage_pendingcharge.first_occurred_at, EXCLUDED.first_occurred_at),
        last_occurred_at = GREATEST(usage_pendingcharge.last_occurred_at, EXCLUDED.last_occurred_at)
"""
# The minute sums of new events (RollupDelta), for usage.fold to roll up: no row is shared with a concurrent batch,
# so nothing waits. `{source}` is the staged batch (INSERT_NEW) or the inserted events (INSERT_AND_ROLL_UP), `{cost}`
# the events' cost in USD.
APPEND_MINUTES = f"""
    INSERT INTO usage_rollupdelta (bucket_start, project_id, api_key_id, model_id, {", ".join(SUMS)})
    SELECT date_trunc('minute', i.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           i.project_id, i.api_key_id, i.model_id,
           count(*) FILTER (WHERE i.kind <> 'cache_storage'),
           count(*) FILTER (WHERE i.status_code >= 400),
           count(*) FILTER (WHERE i.status_code >= 500),
           sum(i.input_tokens), sum(i.output_tokens), sum(i.cached_tokens), sum(i.cache_token_hours), {{cost}},
           sum(i.audio_input_tokens), sum(i.cached_audio_tokens)
    FROM {{source}} i
    WHERE i.kind <> 'count_tokens'
    GROUP BY 1, 2, 3, 4
    RETURNING 1
"""  # noqa: S608 - constant column names
# The usual batch, all new: plain inserts, which check each unique key once as they insert (ON CONFLICT first probes
# the index for every row, then inserts: a fifth of the statement's time). In the order staged, which is key order
# (event_key: bytes compare alike in Python and PostgreSQL; INSERT_AND_ROLL_UP sorts by it): the batch's rows are
# COPYed sorted by event_key, its lines by line key, into temporary tables that were empty (a sequential scan of a
# temporary table is never parallel or synchronised), so no sort is needed for one lock order between concurrent
# batches (were it ever broken, PostgreSQL would detect the deadlock and the batch be retried). A replayed id, even one
# a concurrent batch is inserting, fails it with unique_violation (23505); the batch is then written again by
# INSERT_AND_ROLL_UP, once that is rolled back. Every staged event is inserted, so the minute sums are read from the
# staging table and the statement lines come summed from Python (pending_lines).
INSERT_NEW = f"""
WITH claimed AS (
    -- Near a month start (usage.partitions): claim each id's key at the boundary, in key order (as staged).
    INSERT INTO usage_usageeventguard (boundary, event_key)
    SELECT boundary, event_key FROM usage_staging WHERE boundary IS NOT NULL
    RETURNING 1
), inserted AS (
    INSERT INTO usage_usageevent ({", ".join(COLUMNS)})
    SELECT {", ".join(EVENT_VALUES)}
    FROM usage_staging
    WHERE {CLAIMS_FIRST}
    RETURNING 1
), appended AS ({APPEND_MINUTES.format(source="usage_staging", cost="sum(i.cost_nanos) * 0.000000001")}
), pending AS (
    INSERT INTO usage_pendingcharge ({", ".join(PENDING_KEY)}, {", ".join(PENDING_SUMS)})
    SELECT {", ".join(PENDING_KEY)}, {", ".join(PENDING_SUMS)} FROM pending_staging
    {ADD_TO_PENDING}
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM claimed), (SELECT count(*) FROM appended),
       (SELECT count(*) FROM pending)
"""  # noqa: S608 - only constant column names are interpolated
UNIQUE_VIOLATION = "23505"
UNDEFINED_TABLE = "42P01"
# A batch with replayed ids (some or all): each id is claimed or inserted only if new (ON CONFLICT DO NOTHING), and
# what the inserted events add is read from them. Its rows are locked in the order INSERT_NEW locks them in (by
# event_key, as Python sorted them), so that the two never wait for each other crosswise. A claim whose event was not
# inserted after all (the id was already stored in the same month, away from the boundary) is given back, in the same
# transaction: a claim always stands for a stored event near its boundary.
RELEASE_CLAIMS = """
DELETE FROM usage_usageeventguard
WHERE (boundary, event_key) IN (SELECT * FROM unnest(%s::date[], %s::bytea[]))
"""
INSERT_AND_ROLL_UP = f"""
WITH claimed AS (
    -- Near a month start (usage.partitions): claim each id at the boundary, in key order; an event near a
    -- boundary whose id is taken there already is a replay, and is not inserted.
    INSERT INTO usage_usageeventguard (boundary, event_key)
    SELECT boundary, event_key FROM usage_staging WHERE boundary IS NOT NULL
    ORDER BY boundary, event_key
    ON CONFLICT (boundary, event_key) DO NOTHING
    RETURNING boundary, event_key
), inserted AS (
    INSERT INTO usage_usageevent ({", ".join(COLUMNS)})
    SELECT {", ".join(EVENT_VALUES)}
    FROM usage_staging
    WHERE {CLAIMS_FIRST} AND (boundary IS NULL OR event_key IN (SELECT event_key FROM claimed))
    ORDER BY event_key
    ON CONFLICT (event_key, month) DO NOTHING
    RETURNING event_id, event_key, project_id, api_key_id, model_id, kind, status_code, occurred_at,
              input_tokens, output_tokens, cached_tokens, cache_token_hours, cost,
              audio_input_tokens, cached_audio_tokens,
              account_id, price_id, long_prompt, cost_input, cost_output, cost_cached, cost_storage,
              cost_audio, cost_cached_audio
), appended AS ({APPEND_MINUTES.format(source="inserted", cost="sum(i.cost)")}
), pending AS (
    -- What the inserted billed events cost, by statement line (usage.charging charges it to the ledger).
    INSERT INTO usage_pendingcharge ({", ".join(PENDING_KEY)}, {", ".join(PENDING_SUMS)})
    SELECT i.account_id, i.project_id, i.model_id, i.price_id,
           date_trunc('month', i.occurred_at AT TIME ZONE 'America/Los_Angeles')::date,
           s.sku, i.kind = 'batch', i.long_prompt,
           sum(s.quantity), sum(s.amount * 1000000000)::bigint, count(*), min(i.occurred_at), max(i.occurred_at)
    FROM inserted i CROSS JOIN LATERAL (VALUES
        ('input', (i.input_tokens - i.cached_tokens - i.audio_input_tokens + i.cached_audio_tokens)::numeric,
         i.cost_input),
        ('output', i.output_tokens::numeric, i.cost_output),
        ('cached_input', (i.cached_tokens - i.cached_audio_tokens)::numeric, i.cost_cached),
        ('audio_input', (i.audio_input_tokens - i.cached_audio_tokens)::numeric, i.cost_audio),
        ('cached_audio_input', i.cached_audio_tokens::numeric, i.cost_cached_audio),
        ('cache_storage', i.cache_token_hours, i.cost_storage)
    ) AS s(sku, quantity, amount)
    WHERE i.account_id IS NOT NULL AND s.amount > 0
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ORDER BY 1, 2, i.model_id COLLATE "C", 4, 5, s.sku COLLATE "C", 7, 8
    {ADD_TO_PENDING}
    RETURNING 1
)
SELECT array(SELECT event_id FROM inserted), (SELECT count(*) FROM appended), (SELECT count(*) FROM pending),
       array(SELECT boundary FROM claimed WHERE event_key NOT IN (SELECT event_key FROM inserted) ORDER BY event_key),
       array(SELECT event_key FROM claimed WHERE event_key NOT IN (SELECT event_key FROM inserted) ORDER BY event_key)
"""  # noqa: S608 - only constant column names are interpolated


def _store_postgres(rows: list[tuple], lines: list[tuple] | None, received_at: datetime) -> list[str]:
    """Stage `rows` (and the statement lines they add, `lines`: None for a batch that may hold replays) and write
    them with one statement: INSERT_NEW when every event is taken to be new, INSERT_AND_ROLL_UP otherwise."""
    # Django's errors (carrying psycopg's with its SQLSTATE) for the COPYs too, which go to psycopg's cursor directly.
    with connection.wrap_database_errors, connection.cursor() as cursor:
        # Inside a caller's transaction (an outer atomic block, or autocommit turned off: nothing commits on exit).
        if len(connection.atomic_blocks) > 1 or not connection.commit_on_exit:
            cursor.execute(f"{PREPARE_STAGING}; {EMPTY_STAGING}")
        elif connection.connection not in _staging_made:
            cursor.execute(PREPARE_STAGING)
        types = _column_types(cursor, "usage_staging", ROW)
        raw = cursor.cursor  # psycopg 3: COPY is much faster than INSERT for a batch
        # Binary: a time, for one, costs a tenth of its text form to write (and to read, for PostgreSQL).
        with raw.copy(f"COPY usage_staging ({', '.join(ROW)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        if lines is None:
            cursor.execute(INSERT_AND_ROLL_UP, {"received_at": received_at})
            inserted, _, _, boundaries, given_back = cursor.fetchone()
            if given_back:
                cursor.execute(RELEASE_CLAIMS, [boundaries, given_back])
            return inserted
        if lines:
            columns = ", ".join(PENDING_KEY + PENDING_SUMS)
            line_types = _column_types(cursor, "usage_pendingcharge", PENDING_KEY + PENDING_SUMS)
            with raw.copy(f"COPY pending_staging ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(line_types)
                for line in lines:
                    copy.write_row(line)
        cursor.execute(INSERT_NEW, {"received_at": received_at})
    return [row[0] for row in rows]  # a plain INSERT stores every row, or fails


_types: dict[str, dict[str, str]] = {}  # table -> column -> PostgreSQL type, read once per process


def _column_types(cursor, table: str, columns: list[str]) -> list[str]:
    """The columns' PostgreSQL types, for COPY's set_types: psycopg then picks each column's dumper once instead of
    by each value's Python type (about 20 % of the COPY's CPU)."""
    types = _types.get(table)
    if types is None:
        cursor.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table],
        )
        types = _types[table] = dict(cursor.fetchall())
    return [types[column] for column in columns]


def pending_lines(rows: list[tuple]) -> list[tuple]:
    """What the billed events among `rows` (tuples in ROW order) add to each statement line: tuples in
    PENDING_KEY + PENDING_SUMS order, sorted by key. A SKU counts an event only when it costs something; amounts
    are in nano-dollars, exact (each class is rated to the nano-dollar). INSERT_NEW's lines; the Python twin of the
    VALUES list in INSERT_AND_ROLL_UP (a test holds them equal)."""
    sums: dict[tuple, list] = {}
    for (
        _, project, _, model, price, kind, _, _, tokens_in, tokens_out, cached, hours, moment, _, _, _,
        input_nanos, output_nanos, cached_nanos, storage_nanos, audio, cached_audio, audio_nanos, cached_audio_nanos,
        account, long_prompt, month, _, _,
    ) in rows:  # fmt: skip
        if account is None:
            continue
        batch = kind == "batch"
        for sku, quantity, nanos in (
            ("input", tokens_in - cached - audio + cached_audio, input_nanos),
            ("output", tokens_out, output_nanos),
            ("cached_input", cached - cached_audio, cached_nanos),
            ("audio_input", audio - cached_audio, audio_nanos),
            ("cached_audio_input", cached_audio, cached_audio_nanos),
            ("cache_storage", hours, storage_nanos),
        ):
            if nanos <= 0:  # as INSERT_AND_ROLL_UP's `s.amount > 0`
                continue
            key = (account, project, model, price, month, sku, batch, long_prompt)
            line = sums.get(key)
            if line is None:
                sums[key] = [quantity, nanos, 1, moment, moment]
            else:
                line[0] += quantity
                line[1] += nanos
                line[2] += 1
                if moment < line[3]:
                    line[3] = moment
                elif moment > line[4]:
                    line[4] = moment
    return [(*key, *sums) for key, sums in sorted(sums.items())]


def _bucket(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    if granularity == "minute":
        return moment.replace(second=0, microsecond=0)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _store_orm(rows: list[tuple], received_at: datetime) -> list[str]:
    """The same rule as PostgreSQL's unique keys, from the stored events themselves (SQLite has one writer at a
    time): an id is known in a month, or near a month start (usage.partitions)."""
    zones = partitions.Zones()
    tuples, rows, boundaries = rows, [], []
    for row in tuples:
        fields = dict(zip(ROW, row, strict=True))
        fields.update({name: usd(fields.pop(nanos)) for name, nanos in NANOS_OF.items()}, received_at=received_at)
        boundaries.append(fields.pop("boundary"))
        rows.append(UsageEvent(**fields))
    keys = [row.event_key for row in rows]
    known = set()
    for start in range(0, len(keys), 500):
        for key, month, occurred_at in UsageEvent.objects.filter(event_key__in=keys[start : start + 500]).values_list(
            "event_key", "month", "occurred_at"
        ):
            key = bytes(key)  # SQLite may give a memoryview
            known.add((key, month))
            if (boundary := zones.of(occurred_at)[1]) is not None:
                known.add((key, boundary, "near"))
    new = []
    for row, boundary in zip(rows, boundaries, strict=True):
        if (row.event_key, row.month) not in known and (row.event_key, boundary, "near") not in known:
            new.append(row)
    UsageEvent.objects.bulk_create(new, batch_size=500)
    sums: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    for row in new:
        if row.kind == "count_tokens":
            continue
        for granularity in ("minute", "hour", "day"):
            total = sums[
                (granularity, _bucket(row.occurred_at, granularity), row.project_id, row.api_key_id, row.model_id)
            ]
            total["requests"] += row.kind != "cache_storage"
            total["errors"] += row.status_code >= 400
            total["server_errors"] += row.status_code >= 500
            total["input_tokens"] += row.input_tokens
            total["output_tokens"] += row.output_tokens
            total["cached_tokens"] += row.cached_tokens
            total["cache_token_hours"] += row.cache_token_hours
            total["cost"] += row.cost
            total["audio_input_tokens"] += row.audio_input_tokens
            total["cached_audio_tokens"] += row.cached_audio_tokens
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
    stored = {row.event_id for row in new}
    _add_pending_orm(pending_lines([row for row in tuples if row[0] in stored]))
    return [row.event_id for row in new]


def _add_pending_orm(lines: list[tuple]) -> None:
    width = len(PENDING_KEY)
    for line in lines:
        pending, _ = PendingCharge.objects.get_or_create(**dict(zip(PENDING_KEY, line[:width], strict=True)))
        quantity, amount_nanos, events, first, last = line[width:]
        pending.quantity += quantity
        pending.amount_nanos += amount_nanos
        pending.events += events
        times = [first, last] + [t for t in (pending.first_occurred_at, pending.last_occurred_at) if t is not None]
        pending.first_occurred_at, pending.last_occurred_at = min(times), max(times)
        pending.save()
