"""Finding a customer from what they tell Support (SPEC §10 "Lookup"): pure queries, one per kind of match.

One search box: the query is tried as an e-mail address (exact match first, else contained), a project id, a
12-digit project number, a billing account id and an API key prefix. Each kind is one query of user ids; the users
are one more, whatever the number of matches, so the cost of a search does not grow with its results.
"""

import re
from dataclasses import dataclass, field

from billing.models import BillingAdministrator
from studio import keyformat
from studio.models import ApiKey, Membership, User

MAX_RESULTS = 50
MIN_CONTAINS_LENGTH = 3  # "contains" matches of fewer characters would list everybody
MAX_QUERY_LENGTH = 254

PROJECT_NUMBER = re.compile(r"\d{12}")
ACCOUNT_ID = re.compile(r"[0-9A-Z]{6}-[0-9A-Z]{6}-[0-9A-Z]{6}")
# A key's stored prefix is keyformat.PREFIX plus 8 characters; at least 4 of those must be given.
KEY_PREFIX_MIN = len(keyformat.PREFIX) + 4


class MatchKind:
    EMAIL = "email"
    PROJECT = "project"
    NUMBER = "number"
    ACCOUNT = "account"
    KEY = "key"


@dataclass
class Result:
    user: User
    matches: list[tuple[str, str]] = field(default_factory=list)  # (MatchKind, what matched)


@dataclass
class Search:
    query: str
    results: list[Result]
    truncated: bool  # more than MAX_RESULTS customers matched
    usable: bool  # False: the query was empty or too long to try


def search(query: str) -> Search:
    """Customers matching `query`, by e-mail, ordered by e-mail, at most MAX_RESULTS."""
    query = (query or "").strip()
    if not query or len(query) > MAX_QUERY_LENGTH:
        return Search(query, [], truncated=False, usable=False)
    found: dict[int, list[tuple[str, str]]] = {}
    for user_id, kind, value in _matches(query):
        found.setdefault(user_id, [])
        if (kind, value) not in found[user_id]:
            found[user_id].append((kind, value))
    users = list(User.objects.filter(pk__in=found).order_by("email", "pk")[: MAX_RESULTS + 1])
    results = [Result(user, found[user.pk]) for user in users[:MAX_RESULTS]]
    return Search(query, results, truncated=len(users) > MAX_RESULTS, usable=True)


def _matches(query: str):
    """(user id, kind, matched value) rows, each kind one query, capped: a search never reads a whole table."""
    cap = MAX_RESULTS + 1
    by_email = User.objects.order_by("email").values_list("pk", "email")
    rows = list(by_email.filter(email__iexact=query)[:cap])
    if not rows and len(query) >= MIN_CONTAINS_LENGTH:
        rows = list(by_email.filter(email__icontains=query)[:cap])
    yield from ((user_id, MatchKind.EMAIL, email) for user_id, email in rows)
    members = Membership.objects.order_by("user_id")
    for user_id, project_id in members.filter(project__project_id__in={query, query.lower()}).values_list(
        "user_id", "project__project_id"
    )[:cap]:
        yield user_id, MatchKind.PROJECT, project_id
    if PROJECT_NUMBER.fullmatch(query):
        for user_id, number in members.filter(project__number=query).values_list("user_id", "project__number")[:cap]:
            yield user_id, MatchKind.NUMBER, number
    if ACCOUNT_ID.fullmatch(query.upper()):
        admins = BillingAdministrator.objects.filter(account__account_id=query.upper()).order_by("user_id")
        for user_id, account_id in admins.values_list("user_id", "account__account_id")[:cap]:
            yield user_id, MatchKind.ACCOUNT, account_id
    if query.startswith(keyformat.PREFIX) and len(query) >= KEY_PREFIX_MIN:
        # A whole key pasted in is found by its visible prefix (the secret itself is never stored).
        keys = ApiKey.objects.filter(
            prefix__startswith=query[: keyformat.VISIBLE_PREFIX_LENGTH], project__memberships__isnull=False
        ).order_by("project__memberships__user_id", "pk")
        for user_id, prefix, last4 in keys.values_list("project__memberships__user_id", "prefix", "last4")[:cap]:
            yield user_id, MatchKind.KEY, f"{prefix}…{last4}"
