"""Rolling usage up on PostgreSQL: RollupDelta rows into the minute, hour and day rollups and the hourly peaks.

Ingestion (usage.ingest) appends, in the statement that inserts a batch's new events, what they add to each UTC
minute × project × key × model (RollupDelta): plain inserts, so concurrent batches never wait for each other on a
rollup row, and a replayed event adds nothing because it inserted nothing. `fold` moves those rows into UsageRollup
in one transaction: it deletes the deltas it can see (committed ones), sums them to one row per minute × project ×
key × model and the hours and days from those, adds the sums to the three granularities, then raises the UsagePeak
rows of the hours whose minutes it added requests to (usage.peaks). Each delta is deleted
and added in the same transaction, so it is rolled up exactly once; a fold that fails rolls back and leaves its
deltas to the next one.

One fold at a time (a transaction-level advisory lock): the fold is then the only writer of the rollups, so the
minute totals its peak statement reads, after its own upsert, are final for every delta folded so far, and a peak
is the largest of them (a minute's total only grows, and every fold that grows one raises its hour's peak to it).
(Two folds would wait for each other anyway: the second's DELETE, which scans every row, meets the rows the first
deleted and waits for its commit. The lock makes that explicit, and lets a process skip instead of waiting.)

When: after a batch is stored, by the process that stored it, at most every ROLLUP_FOLD_SECONDS per process, and
only if no other fold is running (`fold_if_due`: a fold under way will take what it can see, and the next batch
the rest). So under traffic the rollups lag the events by about ROLLUP_FOLD_SECONDS, and many batches' sums to one
bucket become one update (the cost per batch falls as traffic grows). The folding process also vacuums the deltas'
table every VACUUM_EVERY_SECONDS: emptied every few seconds, it would otherwise grow by a minute of traffic between
autovacuum's visits, and every fold would scan it whole. The charge job folds too (unless a fold is under way, which
takes what it can see: it never waits for one), so the last batches of a burst are rolled up within
CHARGE_INTERVAL_SECONDS. Tests use 0: every batch is folded as it is stored.

SQLite keeps the rollups and peaks in the ingestion transaction itself (usage.ingest._store_orm): one writer.
"""

import logging
import math
import time

from django.conf import settings
from django.db import Error, connection, transaction

from usage.peaks import RAISE_FOLDED_PEAKS

log = logging.getLogger(__name__)

LOCK = "usage_fold"  # pg advisory lock key: hashtext(LOCK)
SUMS = [
    "requests", "errors", "server_errors", "input_tokens", "output_tokens", "cached_tokens", "cache_token_hours",
    "cost", "audio_input_tokens", "cached_audio_tokens",
]  # fmt: skip

PREPARE = """
CREATE TEMPORARY TABLE IF NOT EXISTS fold_minutes (project_id bigint, model_id varchar(64), minute timestamptz)
ON COMMIT DELETE ROWS; DELETE FROM fold_minutes
"""
FOLD = f"""
WITH taken AS (
    DELETE FROM usage_rollupdelta RETURNING bucket_start, project_id, api_key_id, model_id, {", ".join(SUMS)}
), minutes AS (
    -- Many batches' deltas to one minute become one row first; the hours and days are summed from those.
    SELECT bucket_start, project_id, api_key_id, model_id, {", ".join(f"sum({name}) AS {name}" for name in SUMS)}
    FROM taken GROUP BY 1, 2, 3, 4
), buckets AS (
    SELECT 'minute' AS granularity, * FROM minutes
    UNION ALL
    SELECT g.granularity, date_trunc(g.granularity, m.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           m.project_id, m.api_key_id, m.model_id, {", ".join(f"sum(m.{name})" for name in SUMS)}
    FROM minutes m CROSS JOIN (VALUES ('hour'), ('day')) AS g(granularity)
    GROUP BY 1, 2, 3, 4, 5
), rolled AS (
    INSERT INTO usage_usagerollup (granularity, bucket_start, project_id, api_key_id, model_id, {", ".join(SUMS)})
    SELECT * FROM buckets ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (granularity, bucket_start, project_id, api_key_id, model_id) DO UPDATE SET
        {", ".join(f"{name} = usage_usagerollup.{name} + EXCLUDED.{name}" for name in SUMS)}
), grown AS (
    -- The minutes whose request counts grew: their hours' peaks are raised next (cache storage adds no request).
    INSERT INTO fold_minutes (project_id, model_id, minute)
    SELECT DISTINCT project_id, model_id, bucket_start FROM minutes WHERE requests > 0
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM grown)
"""  # noqa: S608 - only constant column names are interpolated

# The table is emptied by every fold, faster than autovacuum (at most once a minute per database) comes by: without a
# vacuum its pages of dead rows would pile up, and each fold's scan would read them all again.
VACUUM_EVERY_SECONDS = 10

_last_fold = -math.inf  # time.monotonic() of this process's last fold attempt
_last_vacuum = -math.inf


def fold(*, wait: bool = True) -> int | None:
    """Roll up every committed RollupDelta row: the number of rows folded, or None when `wait` is False and another
    fold holds the lock. Nothing to do (0) on SQLite."""
    if connection.vendor != "postgresql":
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [LOCK])
        else:
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [LOCK])
            if not cursor.fetchone()[0]:
                return None
        cursor.execute(PREPARE)
        cursor.execute(FOLD)
        taken, minutes = cursor.fetchone()
        if minutes:
            cursor.execute(RAISE_FOLDED_PEAKS)
    return taken


def fold_if_due() -> None:
    """After a batch is stored: fold, unless this process folded less than ROLLUP_FOLD_SECONDS ago or another fold
    is under way. A failure is logged, never raised: the batch is stored, and its deltas wait for the next fold."""
    global _last_fold
    if connection.vendor != "postgresql":
        return
    now = time.monotonic()
    if now - _last_fold < settings.ROLLUP_FOLD_SECONDS:
        return
    _last_fold = now
    try:
        if fold(wait=False) is not None:
            _vacuum_if_due(now)
    except Error as error:  # DatabaseError, and InterfaceError (a closed connection), which is not one
        log.warning("usage fold failed (%s); its rows wait for the next fold", " ".join(str(error).split()))


def _vacuum_if_due(now: float) -> None:
    """VACUUM the deltas' table at most every VACUUM_EVERY_SECONDS per process, so that its dead rows are reclaimed
    and new ones fill the same few pages. Skipped inside a transaction (where VACUUM cannot run) and when another
    vacuum of it is under way (SKIP_LOCKED). Without truncating the table's empty end: that needs a lock that every
    ingesting transaction conflicts with, which VACUUM would wait up to 5 s for (the migration also sets
    vacuum_truncate off for autovacuum). So it takes only a SHARE UPDATE EXCLUSIVE lock: inserts and folds go on."""
    global _last_vacuum
    if now - _last_vacuum < VACUUM_EVERY_SECONDS or connection.in_atomic_block or not connection.get_autocommit():
        return
    _last_vacuum = now
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (SKIP_LOCKED, TRUNCATE false) usage_rollupdelta")
