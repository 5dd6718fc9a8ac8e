"""Customer lookup (SPEC §10): the search, the customer's page, a billing account's and a project's."""

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing import ledger
from billing.models import (
    CreditKind,
    GoodwillGrant,
    GoodwillReason,
    RefundRequest,
    RefundStatus,
    Statement,
    StatementStatus,
    TierChange,
)
from staff import lookup
from staff.lookup import MatchKind
from studio.models import AuditEvent, Role, Tier
from tests.factories import add_member, make_account, make_key, make_project, make_user
from usage.models import QuotaIncreaseRequest, QuotaMetric, QuotaOverride


def found(query):
    return [(result.user.email, result.matches) for result in lookup.search(query).results]


# --- the search (pure queries) ---


def test_search_by_email_prefers_the_exact_address_case_insensitively(db):
    make_user("ann@example.com")
    make_user("joann@example.com")
    assert found("ANN@Example.com") == [("ann@example.com", [(MatchKind.EMAIL, "ann@example.com")])]


def test_search_by_part_of_an_email_lists_every_address_containing_it_by_email(db):
    make_user("joann@example.com")
    make_user("ann@example.com")
    make_user("bob@other.org")
    assert found("ann@") == [
        ("ann@example.com", [(MatchKind.EMAIL, "ann@example.com")]),
        ("joann@example.com", [(MatchKind.EMAIL, "joann@example.com")]),
    ]


def test_search_by_project_id_lists_its_members(customer_world):
    colleague = make_user("colleague@example.com")
    add_member(customer_world["project"], colleague, Role.VIEWER)
    project_id = customer_world["project"].project_id
    assert found(project_id.upper()) == [
        ("colleague@example.com", [(MatchKind.PROJECT, project_id)]),
        ("customer@example.com", [(MatchKind.PROJECT, project_id)]),
    ]


def test_search_by_project_number(customer_world):
    number = customer_world["project"].number
    assert found(number) == [("customer@example.com", [(MatchKind.NUMBER, number)])]


def test_search_by_billing_account_id_in_any_case_lists_its_administrators(customer_world):
    account_id = customer_world["account"].account_id
    assert found(account_id.lower()) == [("customer@example.com", [(MatchKind.ACCOUNT, account_id)])]


def test_search_by_key_prefix_or_the_whole_key(customer_world):
    key, raw = customer_world["key"]
    assert found(key.prefix[:8]) == [("customer@example.com", [(MatchKind.KEY, key.masked)])]
    assert found(raw) == [("customer@example.com", [(MatchKind.KEY, key.masked)])]


def test_search_matching_one_customer_twice_lists_them_once_with_both_matches(db):
    user = make_user("gen-lang-client-0000000001@example.com")
    make_project(user, project_id="gen-lang-client-0000000001")
    assert found("gen-lang-client-0000000001") == [
        (
            "gen-lang-client-0000000001@example.com",
            [
                (MatchKind.EMAIL, "gen-lang-client-0000000001@example.com"),
                (MatchKind.PROJECT, "gen-lang-client-0000000001"),
            ],
        )
    ]


@pytest.mark.parametrize("query", ["", "   ", "x" * 255])
def test_search_without_a_usable_query_tries_nothing(db, query):
    result = lookup.search(query)
    assert (result.usable, result.results, result.truncated) == (False, [], False)


def test_search_caps_the_number_of_customers(db, monkeypatch):
    monkeypatch.setattr(lookup, "MAX_RESULTS", 2)
    for name in ("a", "b", "c"):
        make_user(f"{name}@cap.example")
    result = lookup.search("@cap.example")
    assert [r.user.email for r in result.results] == ["a@cap.example", "b@cap.example"]
    assert result.truncated is True


def test_lookup_page_lists_customers_with_what_matched(client, support, customer_world):
    client.force_login(support)
    page = client.get(reverse("staff:lookup"), {"q": customer_world["account"].account_id}).content.decode()
    assert f'href="{reverse("staff:customer", args=[customer_world["user"].pk])}"' in page
    assert f"Billing account: <code>{customer_world['account'].account_id}</code>" in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "Enter an e-mail address, a project ID or number"),
        ("%_*?", "No customer matches “%_*?”."),
        ("stc_", "No customer matches “stc_”."),
    ],
)
def test_lookup_page_answers_empty_or_garbage_queries_with_a_message(client, support, customer_world, query, message):
    client.force_login(support)
    response = client.get(reverse("staff:lookup"), {"q": query})
    assert response.status_code == 200
    assert message in response.content.decode()


def test_lookup_page_without_a_query_shows_only_the_box(client, support):
    client.force_login(support)
    page = client.get(reverse("staff:lookup")).content.decode()
    assert 'name="q"' in page and "No customer matches" not in page and "Enter an e-mail" not in page


def test_lookup_htmx_answers_with_the_results_alone(client, support, customer_world):
    client.force_login(support)
    page = client.get(reverse("staff:lookup"), {"q": "customer@"}, headers={"HX-Request": "true"}).content.decode()
    assert page.lstrip().startswith('<div id="lookup-results"') and "<html" not in page


def _add_lookup_rows(indexes):
    for index in indexes:
        user = make_user(f"many{index}@rows.example")
        make_key(make_project(user, name=f"P{index}"))


def _lookup_queries(client, expected_rows):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("staff:lookup"), {"q": "@rows.example"})
    assert response.content.decode().count("@rows.example</a>") == expected_rows
    return len(queries)


def test_lookup_query_count_does_not_grow_with_results(client, support):
    client.force_login(support)
    _add_lookup_rows([0])
    one = _lookup_queries(client, 1)
    _add_lookup_rows([1, 2])
    assert _lookup_queries(client, 3) == one


# --- the customer's page ---


@pytest.fixture
def rich_customer(customer_world, finance):
    """The customer world with credit, statements, tier history and one open request of each kind."""
    account, project = customer_world["account"], customer_world["project"]
    ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=Decimal("25.00"), source="promo")
    for month, due in ((date(2026, 8, 1), "12.30"), (date(2026, 9, 1), "4.56"), (date(2026, 10, 1), "7.89")):
        Statement.objects.create(
            account=account,
            month=month,
            status=StatementStatus.PAID,
            usage_total=Decimal(due),
            credits_total=Decimal("0"),
            amount_due=Decimal(due),
        )
    Statement.objects.create(
        account=account,
        month=date(2026, 7, 1),
        status=StatementStatus.PAID,
        usage_total=Decimal("99.99"),
        credits_total=Decimal("0"),
        amount_due=Decimal("99.99"),
    )
    TierChange.objects.create(project=project, from_tier=Tier.FREE, to_tier=Tier.TIER_1, reason="billing linked")
    RefundRequest.objects.create(account=account, amount=Decimal("10.00"), requested_by=customer_world["user"])
    RefundRequest.objects.create(
        account=account, amount=Decimal("3.00"), requested_by=customer_world["user"], status=RefundStatus.REJECTED
    )
    QuotaIncreaseRequest.objects.create(
        project=project,
        model_id="gemini-2.5-pro",
        metric=QuotaMetric.RPM,
        requested_value=500,
        reason="launch",
        requested_by=customer_world["user"],
    )
    GoodwillGrant.objects.create(
        account=account,
        amount=Decimal("150.00"),
        reason_code=GoodwillReason.SERVICE_ISSUE,
        note="outage",
        credit_expires_at=timezone.now() + timedelta(days=90),
        requested_by=finance,
    )
    return customer_world


def _section(page: str, heading_id: str) -> str:
    start = page.index(f'id="{heading_id}"')
    end = page.find("</section>", start)
    return page[start:end]


def test_customer_page_shows_projects_keys_accounts_and_balances(client, support, rich_customer):
    client.force_login(support)
    user, project = rich_customer["user"], rich_customer["project"]
    key, raw = rich_customer["key"]
    page = client.get(reverse("staff:customer", args=[user.pk])).content.decode()
    projects = _section(page, "projects-heading")
    assert f'href="{reverse("staff:project", args=[project.project_id])}">Customer app</a>' in projects
    assert "<td>Owner</td>" in projects and "Tier 1" in projects and "<td>Billing active</td>" in projects
    keys = _section(page, "keys-heading")
    assert f"<code>{key.masked}</code>" in keys and raw not in page
    accounts = _section(page, "accounts-heading")
    assert "USD 25.00" in accounts  # credit remaining
    # The newest three statements, newest first; July is left out.
    assert re.findall(r"USD \d+\.\d\d <small>Paid", accounts) == [
        "USD 7.89 <small>Paid",
        "USD 4.56 <small>Paid",
        "USD 12.30 <small>Paid",
    ]


def test_customer_page_shows_tier_history_open_requests_and_audit(client, support, rich_customer):
    client.force_login(support)
    user = rich_customer["user"]
    page = client.get(reverse("staff:customer", args=[user.pk])).content.decode()
    tiers = _section(page, "tiers-heading")
    assert "Free" in tiers and "Tier 1" in tiers and "billing linked" in tiers and "Automatic" in tiers
    requests = _section(page, "requests-heading")
    account_id = rich_customer["account"].account_id
    assert f"Refund of USD 10.00 from {account_id}" in requests and "USD 3.00" not in requests
    assert "Requests per minute (RPM) of 500 on Gemini 2.5 Pro" in requests
    assert f"Goodwill credit of USD 150.00 to {account_id}" in requests
    history = _section(page, "history-heading")
    assert history.count("<code>api_key.create</code>") == 1
    assert f'href="{reverse("staff:audit")}?customer={user.pk}"' in history


def test_customer_page_offers_view_as_only_to_those_who_may(client, support, finance, customer):
    url = reverse("staff:customer", args=[customer.pk])
    client.force_login(support)
    assert f'action="{reverse("staff:view-as", args=[customer.pk])}"' in client.get(url).content.decode()
    client.force_login(finance)
    page = client.get(url).content.decode()
    assert reverse("staff:view-as", args=[customer.pk]) not in page and "View as customer" not in page


def test_customer_page_of_a_staff_member_offers_no_view_as(client, support, finance):
    client.force_login(support)
    page = client.get(reverse("staff:customer", args=[finance.pk])).content.decode()
    assert reverse("staff:view-as", args=[finance.pk]) not in page
    assert "have no customer console to view" in page


def test_customer_page_of_an_unknown_user_is_404(client, support):
    client.force_login(support)
    assert client.get(reverse("staff:customer", args=[999999])).status_code == 404


# --- a billing account's page and a project's ---


def test_account_page_shows_balances_credits_links_admins_requests_and_history(client, finance, rich_customer):
    client.force_login(finance)
    account = rich_customer["account"]
    page = client.get(reverse("staff:account", args=[account.account_id.lower()])).content.decode()
    assert f"{account.display_name} <small>{account.account_id}</small>" in page
    credits = _section(page, "credits-heading")
    assert "Promotional" in credits and credits.count("USD 25.00") == 2  # granted and remaining
    statements = _section(page, "statements-heading")
    assert re.findall(r"USD \d+\.\d\d</td><td>", statements) == [
        "USD 7.89</td><td>",
        "USD 4.56</td><td>",
        "USD 12.30</td><td>",
        "USD 99.99</td><td>",
    ]
    assert "Customer app" in _section(page, "links-heading")
    assert "customer@example.com" in _section(page, "admins-heading")
    refunds = _section(page, "refunds-heading")
    assert "USD 10.00" in refunds and "USD 3.00" in refunds and "Rejected" in refunds
    assert "USD 150.00" in _section(page, "goodwill-heading") and "outage" in page
    assert "No recorded changes." in _section(page, "history-heading")  # linking is the project's event


def test_account_page_history_is_the_accounts_own(client, finance, support, customer_world):
    account = customer_world["account"]
    AuditEvent.record(actor=support, action="billing.suspend", obj=account, reason="fraud check")
    AuditEvent.record(actor=support, action="project.noise", obj=customer_world["project"])
    client.force_login(finance)
    history = _section(
        client.get(reverse("staff:account", args=[account.account_id])).content.decode(), "history-heading"
    )
    assert "<code>billing.suspend</code>" in history and "fraud check" in history
    assert "project.noise" not in history


def _link_if_routed(name, *args):
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def test_account_page_action_links_follow_permissions(client, finance, support, customer_world):
    account_id = customer_world["account"].account_id
    status_url = _link_if_routed("staff:account-status", account_id)
    goodwill_url = _link_if_routed("staff:goodwill-new", account_id)
    url = reverse("staff:account", args=[account_id])
    client.force_login(support)
    page = client.get(url).content.decode()
    assert (status_url is None or status_url not in page) and (goodwill_url is None or goodwill_url not in page)
    client.force_login(finance)
    page = client.get(url).content.decode()
    assert status_url is None or f'href="{status_url}"' in page
    assert goodwill_url is None or f'href="{goodwill_url}"' in page


def test_account_page_of_an_unknown_account_is_404(client, finance):
    client.force_login(finance)
    assert client.get(reverse("staff:account", args=["ZZZZZZ-ZZZZZZ-ZZZZZZ"])).status_code == 404


def test_project_page_shows_members_keys_tier_overrides_requests_and_history(client, support, rich_customer):
    project = rich_customer["project"]
    project.tier_locked = True
    project.save(update_fields=["tier_locked"])
    QuotaOverride.objects.create(project=project, model_id="gemini-2.5-flash", rpm=4000, updated_by=support)
    key, raw = rich_customer["key"]
    client.force_login(support)
    page = client.get(reverse("staff:project", args=[project.project_id])).content.decode()
    assert f"Customer app <small>{project.project_id}</small>" in page
    assert 'Tier 1</span> <span class="badge warning">Kept by staff' in page
    assert "customer@example.com</a> · Owner" in _section(page, "members-heading")
    assert f"<code>{key.masked}</code>" in _section(page, "keys-heading") and raw not in page
    assert "billing linked" in _section(page, "tiers-heading")
    assert '<td class="num">4000</td><td class="num">—</td>' in _section(page, "overrides-heading")
    assert "Waiting for review" in _section(page, "quota-requests-heading")
    assert "<code>api_key.create</code>" not in _section(page, "history-heading")  # the key's, not the project's
    tier_url = _link_if_routed("staff:tier-override", project.project_id)
    assert tier_url is None or f'href="{tier_url}"' in page
    client.force_login(rich_customer["user"])  # (sanity: the customer cannot)
    assert client.get(reverse("staff:project", args=[project.project_id])).status_code == 404


def test_project_page_hides_the_tier_override_link_from_finance(client, finance, customer_world):
    project_id = customer_world["project"].project_id
    tier_url = _link_if_routed("staff:tier-override", project_id)
    client.force_login(finance)
    page = client.get(reverse("staff:project", args=[project_id])).content.decode()
    assert tier_url is None or tier_url not in page


def test_customer_page_query_count_does_not_grow_with_rows(client, support, customer):
    client.force_login(support)
    url = reverse("staff:customer", args=[customer.pk])

    def add_row(index):
        project = make_project(customer, name=f"Row {index}", tier=Tier.TIER_1)
        make_key(project)
        make_account(customer, projects=[project])
        TierChange.objects.create(project=project, from_tier=Tier.FREE, to_tier=Tier.TIER_1, reason="x")

    add_row(0)
    with CaptureQueriesContext(connection) as one:
        client.get(url)
    add_row(1)
    add_row(2)
    with CaptureQueriesContext(connection) as three:
        client.get(url)
    assert len(three) == len(one)


# --- who may open them ---

LOOKUP_URLS = [
    ("staff:lookup", lambda world: []),
    ("staff:customer", lambda world: [world["user"].pk]),
    ("staff:account", lambda world: [world["account"].account_id]),
    ("staff:project", lambda world: [world["project"].project_id]),
]


@pytest.mark.parametrize(("name", "args"), LOOKUP_URLS)
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("who", [None, "customer", "groupless_staff"])
def test_lookup_pages_are_404_to_anyone_without_the_permission(
    request, client, customer_world, name, args, method, who
):
    if who is not None:
        client.force_login(request.getfixturevalue(who))
    response = getattr(client, method)(reverse(name, args=args(customer_world)))
    assert response.status_code == 404


@pytest.mark.parametrize(("name", "args"), LOOKUP_URLS)
@pytest.mark.parametrize("who", ["support", "finance", "superuser"])
def test_lookup_pages_open_to_support_finance_and_superusers(request, client, customer_world, name, args, who):
    client.force_login(request.getfixturevalue(who))
    response = client.get(reverse(name, args=args(customer_world)))
    assert response.status_code == 200
    assert (
        response.templates[0].name
        == {
            "staff:lookup": "staff/customers.html",
            "staff:customer": "staff/customer.html",
            "staff:account": "staff/account.html",
            "staff:project": "staff/project.html",
        }[name]
    )
