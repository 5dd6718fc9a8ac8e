from billing.models.accounts import (
    AccountStatus,
    BillingAccount,
    BillingAdministrator,
    PaymentMethod,
    PaymentMethodKind,
    PaymentsProfile,
    PrepaymentMethodRule,
    PrepaymentStatus,
    ProfileType,
    ProjectBilling,
)
from billing.models.countries import Country
from billing.models.ledger import Credit, CreditKind, EntryKind, LedgerEntry
from billing.models.wizard import SetupSession

__all__ = [
    "AccountStatus",
    "BillingAccount",
    "BillingAdministrator",
    "Country",
    "Credit",
    "CreditKind",
    "EntryKind",
    "LedgerEntry",
    "PaymentMethod",
    "PaymentMethodKind",
    "PaymentsProfile",
    "PrepaymentMethodRule",
    "PrepaymentStatus",
    "ProfileType",
    "ProjectBilling",
    "SetupSession",
]
