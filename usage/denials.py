"""Denials on record (X6): the requests quota:check refused with RATE_LIMIT_EXCEEDED, moved from the limiter to
QuotaDenial (per UTC minute, hour and day × project × model × quota id, beside the rollups).

The check itself only counts a denial in the limiter, in the same atomic step as the check (usage.limiter: through
Redis, in the same script call). From there:

- Redis (`flush`, the flush_denials job, every minute): the denials of each scope are claimed (renamed, atomically,
  to a claim key under a claim id), then their counts and a DenialClaim row per claim id are written in one
  transaction, then the claims are deleted from Redis. Exactly once: if the job dies before its commit, the claims
  stay in Redis and the next run writes them (a claim left behind is returned again under its own id); if it dies
  after its commit but before deleting them, the next run finds their DenialClaim rows, writes nothing for them and
  deletes them. Two runners at once (the job runs under job_lock, so only by accident) cannot both commit one claim:
  its id is the DenialClaim's key, and the loser's transaction rolls back whole (its claims wait for the next run).
  A claim lives DENIAL_TTL_SECONDS in Redis; DenialClaim rows a day longer, then they are deleted.
- In-process denials (no REDIS_URL, or counted by the Redis limiter's fallback during an outage) are in the memory
  of the process that checked. That process writes them (`flush_local`), at its first check once they have waited
  LOCAL_DENIALS_INTERVAL (a minute), or `flush` does in the job's own process. Taken from memory, then written in one
  transaction, put back if the write fails: at most once, since denials taken by a process that dies before its
  commit are lost (at most a minute of one process's denials, in a mode that is already per process).

Only scopes of projects ("p<pk>", usage.admission.project_scope) are written; other scopes' denials are claimed and
dropped.
"""

import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from usage.limiter import DENIAL_TTL_SECONDS, Denials, Limiter, get_limiter
from usage.models import DenialClaim, Granularity, QuotaDenial

log = logging.getLogger(__name__)

PROJECT_SCOPE = re.compile(r"p([0-9]+)")  # usage.admission.project_scope, read back
# DenialClaim rows outlive any claim key that could name them (DENIAL_TTL_SECONDS) by this much.
CLAIM_ROW_MARGIN = timedelta(days=1)

UPSERT = f"""
INSERT INTO {QuotaDenial._meta.db_table} (project_id, granularity, bucket_start, model_id, quota_id, count)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (project_id, granularity, bucket_start, model_id, quota_id)
DO UPDATE SET count = {QuotaDenial._meta.db_table}.count + EXCLUDED.count
"""  # noqa: S608 - the table name is a constant; PostgreSQL and SQLite both speak this upsert


@dataclass(frozen=True)
class FlushRun:
    """What one `flush` did: claims from Redis written, claims already written before (left behind), denied
    requests written (from claims and this process's memory), and denied requests dropped (not a project's)."""

    claims: int
    already_written: int
    requests: int
    dropped: int


def record_past(project, model_id: str, quota_id: str, minute: datetime, count: int) -> None:
    """Record `count` requests of `project` for `model_id` refused by `quota_id` in the UTC minute holding `minute`
    (an aware datetime), as if the limiter had counted them: added to the minute, hour and day rows. For the demo's
    history (a day that hit its RPD) and tests; the live path is the limiter and `flush`."""
    if timezone.is_naive(minute):
        raise ValueError("minute must be an aware datetime")
    if count < 1:
        raise ValueError("count must be at least 1")
    epoch_minute = int(minute.timestamp() // 60)
    with transaction.atomic():
        _write({(project.pk, model_id, quota_id, epoch_minute): count})


def flush(limiter: Limiter | None = None) -> FlushRun:
    """Move the denials the limiter holds (Redis claims, and this process's own) to QuotaDenial; see the module
    docstring for what happens when it is interrupted. Raises a RedisError or DatabaseError it meets: what it had not
    written is still claimed in Redis, or back in memory."""
    limiter = limiter or get_limiter()
    claims = limiter.claim_denials(uuid.uuid4().hex)
    local = limiter.take_local_denials()
    claim_ids = {claim.claim_id for claim in claims}
    written = set(DenialClaim.objects.filter(claim_id__in=claim_ids).values_list("claim_id", flat=True))
    fresh = [claim for claim in claims if claim.claim_id not in written]
    denials = [denial for claim in fresh for denial in claim.denials] + local
    counts, dropped = _by_project(denials)
    try:
        with transaction.atomic():
            # The claims first: a second writer of the same claim waits here for this commit, then fails.
            DenialClaim.objects.bulk_create(DenialClaim(claim_id=claim_id) for claim_id in sorted(claim_ids - written))
            _write(counts)
    except DatabaseError:
        limiter.restore_local_denials(local)
        raise
    limiter.release_denials(claims)
    DenialClaim.objects.filter(
        written_at__lt=timezone.now() - timedelta(seconds=DENIAL_TTL_SECONDS) - CLAIM_ROW_MARGIN
    ).delete()
    run = FlushRun(len(fresh), len(claims) - len(fresh), sum(counts.values()), dropped)
    log.info(
        "flush_denials: %d denied request(s) written from %d claim(s) and this process; %d claim(s) already written; "
        "%d dropped (not a project's)",
        run.requests,
        run.claims,
        run.already_written,
        run.dropped,
    )
    return run


def flush_local(limiter: Limiter) -> int:
    """Write this process's in-process denials (called by quota:check once they are due); returns the requests
    written. Never raises a database error: the denials go back to the limiter, for the next attempt."""
    local = limiter.take_local_denials()
    counts, _ = _by_project(local)
    try:
        with transaction.atomic():
            _write(counts)
    except DatabaseError:
        limiter.restore_local_denials(local)
        log.warning("could not write %d in-process denial(s); kept for the next attempt", len(local), exc_info=True)
        return 0
    return sum(counts.values())


def _by_project(denials: list[Denials]) -> tuple[dict[tuple[int, str, str, int], int], int]:
    """({(project pk, model, quota id, minute): count}, requests dropped because their scope is not a project's)."""
    counts: dict[tuple[int, str, str, int], int] = defaultdict(int)
    dropped = 0
    for scope, model, quota_id, minute, count in denials:
        project = PROJECT_SCOPE.fullmatch(scope)
        if project is None:
            dropped += count
            continue
        counts[(int(project[1]), model, quota_id, minute)] += count
    return counts, dropped


def _write(counts: dict[tuple[int, str, str, int], int]) -> None:
    """Add the counts to their minute, hour and day rows (in the caller's transaction), in key order: one lock order
    for concurrent writers."""
    rows: dict[tuple, int] = defaultdict(int)
    for (project_pk, model, quota_id, minute), count in counts.items():
        start = datetime.fromtimestamp(minute * 60, UTC)
        buckets = {
            Granularity.MINUTE: start,
            Granularity.HOUR: start.replace(minute=0),
            Granularity.DAY: start.replace(hour=0, minute=0),
        }
        for granularity, bucket_start in buckets.items():
            rows[(project_pk, str(granularity), bucket_start, model, quota_id)] += count
    if not rows:
        return
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        (pk, grain, adapt(start), model, quota, count)
        for (pk, grain, start, model, quota), count in sorted(rows.items())
    ]
    with connection.cursor() as cursor:
        cursor.executemany(UPSERT, params)
