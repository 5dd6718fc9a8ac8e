"""The time zones a person can choose for the times the console shows (X5): IANA names.

The names are those of the system's time zone database (`zoneinfo.available_timezones()`),
without "localtime" (the server's own zone under another name) and "Factory" (no place has it).
"""

from functools import cache
from zoneinfo import ZoneInfo, available_timezones

NOT_PLACES = {"localtime", "Factory"}


@cache
def zone_names() -> tuple[str, ...]:
    """Every zone a person may choose, sorted. Read once per process: the database is on disk."""
    return tuple(sorted(available_timezones() - NOT_PLACES))


def zone_named(name: str | None) -> ZoneInfo | None:
    """The zone called `name`, or None for a name that is not one of `zone_names()` (or empty)."""
    if not name or name not in _known():
        return None
    return ZoneInfo(name)


@cache
def _known() -> frozenset[str]:
    return frozenset(zone_names())
