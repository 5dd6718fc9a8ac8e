"""The busiest minute of each UTC hour per project × model (UsagePeak), raised as usage is rolled up.

The Limits tab shows the most requests and input tokens of any one UTC minute of a range, over all the project's keys.
Read from the minute rollups that is every key's every minute (777,600 rows for a busy project's 90 days); read from
UsagePeak it is at most 24 rows per model per day, plus the minutes of the partial hours at the range's edges
(usage.queries._minute_peaks).

A peak is a maximum over minutes of sums over keys, so it cannot be raised by what one batch adds alone: another key's
events of the same minute may be in another batch. But a minute's total only grows (rollups only add), so the hour's
peak is exact if, whenever a minute's total grows, the peak is raised to the new total: GREATEST(peak, total after).
The total must be read once every addition to that minute is in the rollups:

- on PostgreSQL the rollups are written by usage.fold alone, one fold at a time (an advisory lock): after its upsert,
  a fold reads the totals of the minutes it added requests to (the `fold_minutes` it kept) and raises their hours'
  peaks (RAISE_FOLDED_PEAKS). No other writer can be adding to those minutes meanwhile;
- on SQLite the ingestion transaction itself adds to the rollups and then reads the totals (`update_peaks`): writers
  are serialized by the database lock, which the batch already holds when it reads.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from django.db.models import F, Sum
from django.db.models.functions import Greatest

from usage.models import UsagePeak, UsageRollup

# What the minute rollups count as requests and input tokens: count_tokens is not rolled up, storage adds neither.
NOT_REQUESTS = ("count_tokens", "cache_storage")

# After usage.fold's upsert, in its transaction: each hour whose minutes it added requests to, raised to the busiest of
# those minutes' totals over all keys (reading the rollups, now final for everything folded).
RAISE_FOLDED_PEAKS = """
INSERT INTO usage_usagepeak (project_id, model_id, hour, requests, input_tokens)
SELECT t.project_id, t.model_id, date_trunc('hour', t.minute AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       max(s.requests), max(s.input_tokens)
FROM fold_minutes t
CROSS JOIN LATERAL (
    SELECT coalesce(sum(r.requests), 0) AS requests, coalesce(sum(r.input_tokens), 0) AS input_tokens
    FROM usage_usagerollup r
    WHERE r.project_id = t.project_id AND r.granularity = 'minute' AND r.bucket_start = t.minute
      AND r.model_id = t.model_id
) s
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
ON CONFLICT (project_id, model_id, hour) DO UPDATE SET
    requests = GREATEST(usage_usagepeak.requests, EXCLUDED.requests),
    input_tokens = GREATEST(usage_usagepeak.input_tokens, EXCLUDED.input_tokens)
WHERE EXCLUDED.requests > usage_usagepeak.requests OR EXCLUDED.input_tokens > usage_usagepeak.input_tokens
"""


def update_peaks(rows: list[tuple], inserted: Sequence[str], columns: Sequence[str]) -> None:
    """SQLite: raise the UsagePeak rows of the minutes the batch's new events were rolled up into to those minutes'
    totals. `rows`: the batch as ingestion stores it (tuples in `columns` order, usage.ingest.ROW); `inserted`:
    the ids of the events that were new (a replayed event added nothing, so it changes no peak). Call it in the
    ingestion transaction, after the rollups were added. (PostgreSQL: usage.fold raises the peaks.)"""
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
