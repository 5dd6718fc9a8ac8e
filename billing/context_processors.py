from django.utils.functional import SimpleLazyObject

from billing.models import BillingAdministrator, PrepaymentStatus

# The prepayment pages themselves: the notice would only repeat what they say.
PREPAYMENT_PAGES = {"prepayment", "prepayment-attempt", "prepayment-for-project"}


def prepayment_notice(request):
    """R12: the billing account whose outstanding prepayment the user has not dismissed yet.

    Lazy: the query runs only on pages that render the notice (the console shell).
    """

    def load():
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        match = getattr(request, "resolver_match", None)
        if match is not None and match.namespace == "billing" and match.url_name in PREPAYMENT_PAGES:
            return None
        row = (
            BillingAdministrator.objects.filter(
                user=user,
                prepayment_notice_dismissed_at__isnull=True,
                account__prepayment_status=PrepaymentStatus.REQUIRED,
            )
            .select_related("account")
            .first()
        )
        return row.account if row else None

    return {"prepayment_notice": SimpleLazyObject(load)}
