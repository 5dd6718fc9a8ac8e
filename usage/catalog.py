"""An in-process snapshot of the catalog for the hot paths (admission, rating).

The catalog is small and changes rarely; each process reloads it at most every
settings.CATALOG_TTL_SECONDS, so an edit in the admin applies within that time. Project tiers are
not cached: a tier change applies to the next request.

A reload that the database refuses (an outage) keeps the snapshot it has for another
CATALOG_TTL_SECONDS, with a warning: quota:check answers from Redis and the process's catalog, and
must go on while PostgreSQL is down (issue 14).
"""

import logging
import threading
import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import DatabaseError

from usage.models import CatalogModel, Price, RateLimit, SpendLimit
from usage.rating import Tariff, tariff


@dataclass(frozen=True)
class Catalog:
    models: dict[str, CatalogModel]  # inactive ones too: their past usage is still reported and rated
    rate_limits: dict[tuple[str, str], RateLimit]  # (tier, model id)
    spend_limits: dict[str, SpendLimit]  # tier
    prices: dict[str, list[Price]]  # model id -> versions, newest first
    loaded_at: float
    tariffs: dict[int, Tariff]  # price version pk -> its prices for usage.rating (integers)

    def price_at(self, model_id: str, moment):
        for price in self.prices.get(model_id, ()):  # newest first: usually the first one
            if price.effective_from <= moment:
                return price
        return None


logger = logging.getLogger(__name__)
_lock = threading.Lock()
_snapshot: Catalog | None = None


def load() -> Catalog:
    prices: dict[str, list[Price]] = {}
    for price in Price.objects.order_by("-effective_from"):
        prices.setdefault(price.model_id, []).append(price)
    models = {m.model_id: m for m in CatalogModel.objects.all()}
    return Catalog(
        models=models,
        rate_limits={(r.tier, r.model_id): r for r in RateLimit.objects.all()},
        spend_limits={s.tier: s for s in SpendLimit.objects.filter(enabled=True)},
        prices=prices,
        loaded_at=time.monotonic(),
        tariffs={price.pk: tariff(price, models[model]) for model, versions in prices.items() for price in versions},
    )


def get_catalog() -> Catalog:
    global _snapshot
    snapshot = _snapshot
    if snapshot is None or time.monotonic() - snapshot.loaded_at > settings.CATALOG_TTL_SECONDS:
        with _lock:
            if _snapshot is None or time.monotonic() - _snapshot.loaded_at > settings.CATALOG_TTL_SECONDS:
                try:
                    _snapshot = load()
                except DatabaseError as error:
                    if _snapshot is None:
                        raise
                    logger.warning("catalog: reload failed (%r); the snapshot in hand is kept", error)
                    _snapshot = replace(_snapshot, loaded_at=time.monotonic())
            snapshot = _snapshot
    return snapshot


def forget():
    """Drop the snapshot (tests, and after a catalog edit in this process)."""
    global _snapshot
    _snapshot = None
