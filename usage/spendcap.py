"""The project's monthly spend cap (X4, X8; SPEC §9): paid requests stop before the month's spend passes it.

The cap is a column of the project (`Project.monthly_spend_cap`, set by `Project.set_spend_cap`), so admission reads
it in the query that finds the key. quota:check counts it as one more limit of the project's check, in the same
limiter call (usage.limiter, window PACIFIC_MONTH): it admits a request only if

    spend of the Pacific month so far + the estimates of admitted requests not yet reported + this request's estimate
    <= the cap,

all in micro-USD (the estimate is the spend limit's: `admission.spend_estimate`). The month's spend is the counter's
seed (the books when the counter was made: `month_spend_micro_usd`) plus what settlement added since (each newly
stored event's cost, rounded up to the micro-dollar, in the month it occurred in). A refusal is the 429 of every
quota, named `ProjectMonthlySpendCap`, retry at the end of the Pacific month. How far spend can pass the cap:
docs/ARCHITECTURE.md ("The monthly spend cap").

Only paid tiers are capped: free usage is not billed, so it spends nothing.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial

from django.db import connection

from billing.models import BillingPeriod, UsageLine
from studio.models import Tier
from usage.limiter import PACIFIC_MONTH, Counter, Limit, get_limiter, month_first_day, pacific_month_windows
from usage.models import PendingCharge
from usage.rating import micro_usd

QUOTA_ID = "ProjectMonthlySpendCap"
# The measure of reported usage that settles the cap's reservations: the same micro-USD as the spend limit's, under a
# name of its own (a reservation id carries one amount per measure).
MONTH_MICRO_USD = "month_micro_usd"
MICRO = Decimal(1_000_000)


def cap_counter(since: datetime) -> Counter:
    """The counter of a cap set (from none) at `since`: a cap removed and set again gets a new one, seeded from the
    books, since nothing counted its spend meanwhile."""
    return Counter(f"{QUOTA_ID}:{int(since.timestamp())}", PACIFIC_MONTH)


def cap_micro_usd(cap) -> int:
    """The cap in micro-USD; `cap` as the database answers it (a Decimal, or a number or text on SQLite)."""
    return int(Decimal(str(cap)) * MICRO)


def cap_limit(project_pk: int, cap: int, since: datetime, estimate: int) -> Limit:
    """The limit a request of the project counts against: `cap` and `estimate` in micro-USD."""
    name, window = cap_counter(since)
    return Limit(
        QUOTA_ID,
        window,
        cap,
        estimate,
        counter=name,
        settles=MONTH_MICRO_USD,
        seed=partial(month_spend_micro_usd, project_pk),
    )


def applies(tier: str) -> bool:
    """Whether a project at effective `tier` is held to its cap."""
    return tier != Tier.FREE


def _seed_sql() -> str:
    line, pending, period = UsageLine._meta.db_table, PendingCharge._meta.db_table, BillingPeriod._meta.db_table
    accounts = f"SELECT account_id FROM {period} WHERE project_id = %s AND account_id IS NOT NULL"  # noqa: S608
    return (
        f"SELECT (SELECT COALESCE(SUM(amount), 0) FROM {line} "  # noqa: S608
        f"WHERE account_id IN ({accounts}) AND month = %s AND project_id = %s), "
        f"(SELECT COALESCE(SUM(amount_nanos), 0) FROM {pending} "
        f"WHERE account_id IN ({accounts}) AND project_id = %s AND month = %s)"
    )


def month_spend_micro_usd(project_pk: int, month: date) -> int:
    """What the project's usage of the Pacific month starting `month` cost, in micro-USD: the ledger's usage lines
    of that month (charged, whoever paid: credits do not reduce spend) plus the usage not yet charged (pending, rounded
    up to the micro-dollar). One statement, so one snapshot: a charge run moving pending usage to the ledger meanwhile
    is seen wholly before or wholly after. Reads by the accounts the project was ever billed to, their indexes."""
    with connection.cursor() as cursor:
        cursor.execute(_seed_sql(), [project_pk, month, project_pk, project_pk, project_pk, month])
        lines, pending = cursor.fetchone()
    return round(Decimal(str(lines)) * MICRO) + micro_usd(int(pending))


@dataclass(frozen=True)
class CapStatus:
    """The cap as the Limits tab shows it (micro-USD figures as USD Decimals)."""

    cap: Decimal | None  # None: no cap
    applies: bool  # False on the free tier: nothing is billed, so nothing is capped
    spent: Decimal  # the Pacific month's spend so far, from the books (charged and pending): may pass the cap
    live: Decimal | None  # what admission counts now: reported spend + reservations in flight (None: no cap applies)
    resets_at: datetime  # the month's end (midnight Pacific on the 1st)


def cap_status(project, *, now: datetime) -> CapStatus:
    """The project's cap, its month's spend (one query) and, if the cap applies, the limiter's count (one peek, which
    seeds the month's counter if it has none)."""
    from usage.admission import project_scope  # admission imports this module

    month = pacific_month_windows(now.timestamp())[1]
    spent = month_spend_micro_usd(project.pk, month_first_day(month.day_id))
    capped = project.monthly_spend_cap is not None and applies(project.effective_tier)
    live = None
    if capped:
        limit = cap_limit(project.pk, cap_micro_usd(project.monthly_spend_cap), project.spend_cap_since, 0)
        state = get_limiter().peek(project_scope(project.pk), [limit])[0]
        live = Decimal(state.limit - state.remaining) / MICRO
    return CapStatus(
        cap=project.monthly_spend_cap,
        applies=applies(project.effective_tier),
        spent=Decimal(spent) / MICRO,
        live=live,
        resets_at=datetime.fromtimestamp(month.end, UTC),
    )
