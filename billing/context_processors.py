from django.utils.functional import SimpleLazyObject

from billing.models import BillingAdministrator, PrepaymentStatus


def prepayment_notice(request):
    """R12: the billing account whose outstanding prepayment the user has not dismissed yet.

    Lazy: the query runs only on pages that render the notice (the console shell).
    """

    def load():
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
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
