"""X8 under concurrency: four processes admit requests of one capped project through Redis and report their usage
late and out of order; the month's spend passes the cap by no more than the stated bound (docs/ARCHITECTURE.md, "The
monthly spend cap"): the sum over admitted requests of what each cost above its estimate."""

import math
import multiprocessing
import random
from decimal import Decimal as D

import pytest
from django.db import connections
from django.utils import timezone

from tests.factories import make_billed_project, make_key, make_user
from usage import admission
from usage.ingest import ingest
from usage.limiter import month_first_day, month_id
from usage.models import UsageEvent
from usage.spendcap import month_spend_micro_usd

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROCESSES = 4
CHECKS = 40  # per process: four times what the cap allows, so that it is hit early
CAP_MICRO_USD = 50_000


def fleet_worker(raw: str, key_pk: int, number: int, start, results) -> None:
    """One fleet process: checks, then reports what it ran in shuffled batches, some only at the end."""
    connections["default"].close()  # the parent's connection is not this process's
    rng = random.Random(number)
    waiting, estimates, denied = [], {}, 0
    start.wait()
    for index in range(CHECKS):
        answer = admission.check(
            raw_key=raw, model_id="gemini-2.5-flash", kind="generate", estimated_input_tokens=rng.randint(100, 3000)
        )
        if not answer["allowed"]:
            assert answer["error"]["quota_id"] == "ProjectMonthlySpendCap", answer
            denied += 1
            continue
        event_id = f"evt-{number}-{index}"
        estimates[event_id] = int(answer["reservation_id"].split("_")[4], 16)  # tokens, spend, cap: the cap's
        waiting.append(
            {
                "event_id": event_id,
                "key_id": str(key_pk),
                "model": "gemini-2.5-flash",
                "kind": "generate",
                "status_code": 200,
                "input_tokens": rng.randint(50, 3500),  # the estimate was only an estimate
                "output_tokens": rng.randint(0, 600),  # no output allowance: all of it is above the estimate
                "reservation_id": answer["reservation_id"],
                "occurred_at": timezone.now().isoformat(),
            }
        )
        if len(waiting) >= 4 and rng.random() < 0.4:  # a late batch, out of order; the rest waits longer
            rng.shuffle(waiting)
            batch, waiting = waiting[:3], waiting[3:]
            assert ingest(batch).accepted == len(batch)
    rng.shuffle(waiting)
    if waiting:
        assert ingest(waiting).accepted == len(waiting)
    connections["default"].close()
    results.put((estimates, denied))


def test_four_processes_never_pass_the_cap_by_more_than_the_bound(redis_url, transactional_db):
    owner = make_user("fleet-cap@example.com")
    project = make_billed_project(owner, name="Capped fleet")
    project.set_spend_cap(D(CAP_MICRO_USD) / 1_000_000, by=owner)
    key, raw = make_key(project)
    connections.close_all()  # forked children must open their own connections
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(PROCESSES), context.Queue()
    workers = [
        context.Process(target=fleet_worker, args=(raw, key.pk, number, start, results)) for number in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES

    estimates = {event_id: estimate for found, _ in outcomes for event_id, estimate in found.items()}
    denied = sum(count for _, count in outcomes)
    costs = dict(UsageEvent.objects.filter(project=project).values_list("event_id", "cost"))
    assert set(costs) == set(estimates)
    actual = {event_id: math.ceil(cost * 1_000_000) for event_id, cost in costs.items()}
    spent = month_spend_micro_usd(project.pk, month_first_day(month_id(timezone.now())))
    assert spent <= sum(actual.values())  # the books: exact, the counter rounds each event up
    bound = sum(max(0, actual[event_id] - estimates[event_id]) for event_id in estimates)

    assert spent <= CAP_MICRO_USD + bound
    assert denied > 0  # the cap was reached: the bound was tested, not idle
    assert spent > CAP_MICRO_USD // 2
