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


UTC = ZoneInfo("UTC")
# The browser's zone, written by static/js/console.js on every page (no inline script: CSP).
TZ_COOKIE = "tz"


def reader_zone(request) -> ZoneInfo:
    """The zone a page shows times in: the person's setting, else their browser's (cookie), else UTC."""
    return zone_named(request.user.time_zone) or zone_named(request.COOKIES.get(TZ_COOKIE)) or UTC


def person_zone(user) -> ZoneInfo:
    """The zone for what a person reads away from a browser (e-mail): their setting, else UTC."""
    return zone_named(user.time_zone) or UTC


def days_between(start, end, zone: ZoneInfo) -> int:
    """Calendar days from `start`'s day to `end`'s day in `zone` (0: the same day there)."""
    return (end.astimezone(zone).date() - start.astimezone(zone).date()).days
