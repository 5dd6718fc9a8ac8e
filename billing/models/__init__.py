from billing.models.accounts import (
    AccountStatus,
    BillingAccount,
    BillingAdministrator,
    BillingPeriod,
    PaymentMethod,
    PaymentMethodKind,
    PaymentsProfile,
    PrepaymentMethodRule,
    PrepaymentStatus,
    ProfileType,
    ProjectBilling,
)
from billing.models.countries import Country
from billing.models.ledger import Credit, CreditKind, EntryKind, EntryReason, LedgerEntry, Sku, UsageLine
from billing.models.prepayments import (
    PaymentStatus,
    Prepayment,
    RefundRequest,
    RefundStatus,
    TierChange,
    TierRule,
)
from billing.models.test_processor import TestProcessorCharge, TestProcessorToken
from billing.models.wizard import SetupSession

__all__ = [
    "AccountStatus",
    "BillingAccount",
    "BillingAdministrator",
    "BillingPeriod",
    "Country",
    "Credit",
    "CreditKind",
    "EntryKind",
    "EntryReason",
    "LedgerEntry",
    "PaymentMethod",
    "PaymentMethodKind",
    "PaymentStatus",
    "PaymentsProfile",
    "Prepayment",
    "PrepaymentMethodRule",
    "PrepaymentStatus",
    "ProfileType",
    "ProjectBilling",
    "RefundRequest",
    "RefundStatus",
    "SetupSession",
    "Sku",
    "TestProcessorCharge",
    "TestProcessorToken",
    "TierChange",
    "TierRule",
    "UsageLine",
]
