"""The busiest minute of each UTC hour per project × model (UsagePeak), kept in the ingestion transaction.

The Limits tab shows the most requests and input tokens of any one UTC minute of a range, over all the project's keys.
Read from the minute rollups that is every key's every minute (777,600 rows for a busy project's 90 days); read from
UsagePeak it is at most 24 rows per model per day, plus the minutes of the partial hours at the range's edges
(usage.queries._minute_peaks).

A peak is a maximum over minutes of sums over keys, so it cannot be raised by what a batch adds alone: another key's
events of the same minute may be in another batch. But a minute's total only grows (rollups only add), so the hour's
peak is exact if it is raised to the new total of every minute a batch added to: GREATEST(peak, total after the
batch) for each of them. The total is read from the minute rollups after the batch's own upsert, and for two batches
that add to one minute in parallel (on different keys, so their rollup upserts do not wait for each other) the one
that reads last must see the other's rows. So, on PostgreSQL (READ COMMITTED, Django's default):

1. the batch locks the UsagePeak rows of the hours it touched, creating missing ones (`INSERT … ON CONFLICT DO UPDATE
   … WHERE false` locks without writing a new row version), in key order: no deadlock between batches, and no cycle
   with the rollup or pending-charge rows, which every batch locks before these and none after;
2. a second statement, with a new snapshot taken after the locks were granted, sums the touched minutes' rollups over
   keys and raises the peaks.

Whichever batch takes an hour's lock last sees every other batch's rows of that hour: each of them wrote its rollups
before it asked for the lock and committed before it let it go. Elsewhere (SQLite) writers are serialized by the
database lock, which the batch already holds when it reads.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from django.db import connection
from django.db.models import F, Sum
from django.db.models.functions import Greatest

from usage.models import UsagePeak, UsageRollup

# What the minute rollups count as requests and input tokens: count_tokens is not rolled up, storage adds neither.
NOT_REQUESTS = ("count_tokens", "cache_storage")

# The batch's minutes come from ingestion's staging table (usage.ingest: it holds exactly this batch), not from
# arrays sent by Python: building and sending those cost ~10 ms of CPU per 1,000 events. Replayed events of the batch
# are in it too; raising a peak to the current total of a minute the batch did not add to is harmless (the peak is
# the largest total of any minute of its hour).
BATCH_MINUTES = """
SELECT DISTINCT project_id, model_id,
       date_trunc('minute', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS minute,
       date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour
FROM usage_staging WHERE kind NOT IN ('count_tokens', 'cache_storage')
"""
LOCK_HOURS = f"""
INSERT INTO usage_usagepeak (project_id, model_id, hour, requests, input_tokens)
SELECT DISTINCT project_id, model_id, hour, 0, 0 FROM ({BATCH_MINUTES}) AS t
ORDER BY 1, 2, 3
ON CONFLICT (project_id, model_id, hour) DO UPDATE SET requests = usage_usagepeak.requests WHERE false
"""  # noqa: S608 - constant SQL
RAISE_PEAKS = f"""
UPDATE usage_usagepeak p
SET requests = GREATEST(p.requests, m.requests), input_tokens = GREATEST(p.input_tokens, m.input_tokens)
FROM (
    SELECT t.project_id, t.model_id, t.hour, max(s.requests) AS requests, max(s.input_tokens) AS input_tokens
    FROM ({BATCH_MINUTES}) AS t
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(r.requests), 0) AS requests, coalesce(sum(r.input_tokens), 0) AS input_tokens
        FROM usage_usagerollup r
        WHERE r.project_id = t.project_id AND r.granularity = 'minute' AND r.bucket_start = t.minute
          AND r.model_id = t.model_id
    ) s
    GROUP BY 1, 2, 3
) m
WHERE p.project_id = m.project_id AND p.model_id = m.model_id AND p.hour = m.hour
  AND (m.requests > p.requests OR m.input_tokens > p.input_tokens)
"""  # noqa: S608 - constant SQL


def update_peaks(rows: list[tuple], inserted: Sequence[str], columns: Sequence[str]) -> None:
    """Raise the UsagePeak rows of the minutes the batch's new events were rolled up into to those minutes' totals.

    `rows`: the batch as ingestion stores it (tuples in `columns` order, usage.ingest.COLUMNS); `inserted`: the ids
    of the events that were new (a replayed event added nothing, so it changes no peak). Call it in the ingestion
    transaction, after the rollups were added and as its last write (it takes the peaks' row locks). Two statements
    on PostgreSQL (reading the batch from ingestion's staging table), none when no event was new."""
    if connection.vendor == "postgresql":
        if inserted:  # the minutes are read from the staging table
            with connection.cursor() as cursor:
                cursor.execute(LOCK_HOURS)
                cursor.execute(RAISE_PEAKS)
        return
    at = {name: columns.index(name) for name in ("event_id", "project_id", "model_id", "kind", "occurred_at")}
    new = set(inserted)
    minutes = sorted(
        {
            (row[at["project_id"]], row[at["model_id"]], _minute(row[at["occurred_at"]]))
            for row in rows
            if row[at["kind"]] not in NOT_REQUESTS and row[at["event_id"]] in new
        }
    )
    if minutes:
        _update_orm(minutes)


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _hour(minute: datetime) -> datetime:
    return minute.replace(minute=0)


def _update_orm(minutes: list[tuple[int, str, datetime]]) -> None:
    wanted = set(minutes)
    by_project = defaultdict(set)
    for project, _, start in minutes:
        by_project[project].add(start)
    best: dict[tuple[int, str, datetime], tuple[int, int]] = {}
    for project, starts in sorted(by_project.items()):
        starts = sorted(starts)
        for first in range(0, len(starts), 500):  # SQLite's limit on parameters per statement
            totals = (
                UsageRollup.objects.filter(
                    project_id=project, granularity="minute", bucket_start__in=starts[first : first + 500]
                )
                .values_list("model_id", "bucket_start")
                .annotate(Sum("requests"), Sum("input_tokens"))
                .order_by()
            )
            for model, start, requests, tokens in totals:
                if (project, model, start) not in wanted:
                    continue
                key = (project, model, _hour(start))
                most = best.get(key, (0, 0))
                best[key] = (max(most[0], requests), max(most[1], tokens))
    for (project, model, hour), (requests, tokens) in sorted(best.items()):
        raised = UsagePeak.objects.filter(project_id=project, model_id=model, hour=hour).update(
            requests=Greatest(F("requests"), requests), input_tokens=Greatest(F("input_tokens"), tokens)
        )
        if not raised:
            UsagePeak.objects.create(
                project_id=project, model_id=model, hour=hour, requests=requests, input_tokens=tokens
            )
