from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from io import StringIO
from zoneinfo import ZoneInfo

import time_machine
from django.core.management import call_command
from django.db.models import Sum

from billing import ledger
from billing.models import BillingAccount, LedgerEntry, Statement, StatementLine, StatementStatus, UsageLine
from studio.models import ApiKey, Membership, Project, User
from usage.models import PendingCharge, QuotaDenial, UsageEvent, UsageRollup
from usage.queries import Sums, Window, limits_for_project, usage_by_bucket


def quota_states(user):
    keys = ApiKey.objects.visible_to(user)
    return sorted({(k.project.quota_state, k.project.upgrade_available) for k in keys})


def test_seed_demo_is_idempotent_and_shows_every_quota_state(db, capsys):
    call_command("seed_demo", "--allow-without-debug")
    counts = (User.objects.count(), Project.objects.count(), Membership.objects.count(), ApiKey.objects.count())

    call_command("seed_demo", "--allow-without-debug")

    assert (User.objects.count(), Project.objects.count(), Membership.objects.count(), ApiKey.objects.count()) == counts
    developer = User.objects.get(email="dev@example.com")
    assert developer.check_password("studio-demo")
    assert User.objects.get(email="staff@example.com").is_staff
    # The main billing account qualifies for Tier 2, so its Tier 1 projects can upgrade.
    assert quota_states(developer) == [
        ("action_required", False),
        ("set_up_billing", False),
        ("tier_1", False),
        ("tier_1", True),
        ("tier_2", False),
        ("tier_3", False),
    ]
    assert Project.objects.not_imported_by(developer).count() == 3
    assert "dev@example.com / studio-demo" in capsys.readouterr().out


def test_demo_developer_is_a_viewer_somewhere(db):
    call_command("seed_demo", "--allow-without-debug")

    roles = set(Membership.objects.filter(user__email="dev@example.com").values_list("role", flat=True))

    assert roles == {"owner", "editor", "viewer"}


def test_seed_demo_refuses_to_run_without_debug(db, settings):
    import pytest
    from django.core.management.base import CommandError

    settings.DEBUG = False

    with pytest.raises(CommandError, match="only with DEBUG on"):
        call_command("seed_demo")
    assert not User.objects.exists()


# The demo's usage history (usage/demo.py), seeded at a fixed moment so that its figures are exact.
SEEDED_AT = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # 10:00 in Los Angeles; the 90 days span a DST change
LA = ZoneInfo("America/Los_Angeles")


def seed_demo_at(moment):
    with time_machine.travel(moment, tick=False):
        call_command("seed_demo", "--allow-without-debug", stdout=StringIO())


def history_state():
    """What the history wrote: events, requests (day rollups), ledger entries, denied requests, pending nano-dollars."""
    return (
        UsageEvent.objects.count(),
        UsageRollup.objects.filter(granularity="day").aggregate(n=Sum("requests"))["n"],
        LedgerEntry.objects.count(),
        QuotaDenial.objects.filter(granularity="day").aggregate(n=Sum("count"))["n"],
        PendingCharge.objects.aggregate(n=Sum("amount_nanos"))["n"],
    )


def test_seed_demo_writes_its_usage_history_once(db):
    seed_demo_at(SEEDED_AT)
    written = history_state()

    seed_demo_at(SEEDED_AT + timedelta(days=1))  # the history ends where the demo was first seeded: nothing new

    assert history_state() == written
    # 10 from the statements (closing charges, rounding, payments), 1 the agency account's unpaid usage (dunning),
    # 1 the prepayment credit of the staff demo's refund request (staff/demo.py)
    assert written[:4] == (3829, 3829, 61, 37)


def test_demo_history_tells_its_story_and_is_charged_once(db):
    seed_demo_at(SEEDED_AT)
    days = Window.days(date(2026, 8, 22), date(2026, 11, 20), LA)
    checkout = Project.objects.get(project_id="gen-lang-client-0100000002")
    daily = defaultdict(Sums)
    for (index, _), sums in usage_by_bucket(checkout.pk, days).items():
        daily[days.bucket_starts[index].date()].add(sums)

    # An incident 12 days ago (a Sunday here): most answers 5xx, and retries.
    spike = date(2026, 11, 8)
    assert (daily[spike].requests, daily[spike].server_errors) == (51, 28)
    assert max(sums.server_errors for day, sums in daily.items() if day != spike) == 2
    # Growth: the last full week against the first; and a weekend dip.
    mondays = (date(2026, 8, 24), date(2026, 11, 9))
    assert [sum(daily[monday + timedelta(days=n)].requests for n in range(7)) for monday in mondays] == [66, 172]
    weekend = [sums.requests for day, sums in daily.items() if day.weekday() >= 5 and day != spike]
    weekdays = [sums.requests for day, sums in daily.items() if day.weekday() < 5]
    assert (round(sum(weekend) / len(weekend)), round(sum(weekdays) / len(weekdays))) == (7, 20)

    # A day that hit RPD: the free tier's 100 requests of gemini-2.5-pro on 17 November (Pacific), then denials.
    default = Project.objects.get(project_id="gen-lang-client-0100000001")
    pro = next(row for row in limits_for_project(default, days) if row.model_id == "gemini-2.5-pro")
    assert (pro.rpd, pro.peak_rpd, pro.denials) == (
        100,
        100,
        {"GenerateRequestsPerDayPerProjectPerModel-FreeTier": 37},
    )
    pro_days = usage_by_bucket(default.pk, days, models=["gemini-2.5-pro"])
    assert [days.bucket_starts[index].date() for (index, _), sums in pro_days.items() if sums.requests == 100] == [
        date(2026, 11, 17)
    ]

    # Charged once, and the prototype's promotional credit is left for simulate_traffic.
    main = BillingAccount.objects.get(display_name="Main billing account")
    # Summed here, not by the database: SQLite sums decimals as floats.
    charged = sum(UsageLine.objects.filter(account=main).values_list("amount", flat=True))
    pending = sum(PendingCharge.objects.filter(account=main).values_list("amount_nanos", flat=True))
    billed = sum(UsageEvent.objects.filter(account=main).values_list("cost", flat=True))
    # Every billed event once, to the nano-dollar: on a statement (exact), charged since, or pending.
    stated = sum(
        StatementLine.objects.filter(statement__account=main, project__isnull=False).values_list(
            "exact_amount", flat=True
        )
    )
    since = sum(
        UsageLine.objects.filter(account=main, entry__statement_link__isnull=True).values_list("amount", flat=True)
    )
    assert stated + since + D(pending) / 10**9 == billed == D("106.007605920")
    assert charged == D("106.007604")  # the statements closed the months' remainders, each to the micro-dollar
    # Past months' statements (issued on the 1st, charged on the 2nd): billing/demo.py's charges (332.40) took
    # the welcome credit (300) before the history's; its 20.00 payment is on October's statement.
    assert [
        (s.month.month, s.status, s.usage_total, s.credits_total, s.amount_due)
        for s in Statement.objects.filter(account=main).order_by("month")
    ] == [
        (8, StatementStatus.NOTHING_DUE, D("0.00"), D("0.00"), D("0.00")),
        (9, StatementStatus.PAID, D("204.32"), D("-180.00"), D("24.32")),
        (10, StatementStatus.PAID, D("184.51"), D("-120.00"), D("44.51")),
    ]
    # What is owed now is November's so far: billing/demo.py's 12.40 and the history's usage since.
    assert ledger.balances(main) == ledger.Balances(D(0), D("12.40") + since, D("332.40") + charged)
    # A goodwill credit that expires within the 14-day reminder window (X2), granted after the charged history.
    goodwill = main.credits.get(kind="goodwill")
    assert (goodwill.expires_at, ledger.balances(main, at=SEEDED_AT).credit_remaining) == (
        SEEDED_AT + timedelta(days=10),
        D("25"),
    )
    # The prototype was used only before its link (free).
    prototype = Project.objects.get(project_id="gen-lang-client-0100000008")
    assert UsageEvent.objects.filter(project=prototype).count() == 48
    assert not UsageEvent.objects.filter(project=prototype, account__isnull=False).exists()
    account = BillingAccount.objects.get(display_name="Prototype billing")
    assert ledger.balances(account) == ledger.Balances(D("0.10"), D(0), D(0))
