"""The payment-processor interface and the built-in test processor (SPEC §8).

Card numbers reach `tokenize_card` and go no further: the console keeps only the returned token,
brand, last 4 and expiry. Another processor is plugged in with settings.PAYMENT_PROCESSOR; it
must provide the four methods of `TestProcessor` with the same meaning.
"""

import secrets
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from billing.models.prepayments import FailureCode, reason_for


@dataclass(frozen=True)
class CardToken:
    token: str
    brand: str
    last4: str


@dataclass(frozen=True)
class ChargeResult:
    status: str  # "succeeded", "pending" (bank transfer awaiting the money) or "refunded"
    reference: str


class PaymentError(Exception):
    """The processor refused; `reason` is translated and safe to show, `code` is stable."""

    def __init__(self, code: str, reason):
        super().__init__(code)
        self.code = code
        self.reason = reason


class ProcessorTimeout(Exception):
    """No answer in time: the charge may or may not have gone through. Reconcile it later."""


class TestProcessor:
    """Deterministic by card number, like a card processor's test mode; its records (tokens and
    charges) are kept in its own tables, as a real processor keeps them on its side.

    - 4242 4242 4242 4242 (and any other valid number) succeeds;
    - 4000 0000 0000 0002 is declined, already when the card is added (verification);
    - 4000 0000 0000 9995 is declined for insufficient funds when charged;
    - 4000 0000 0000 0119 fails with a processing error when charged;
    - settings.TEST_PROCESSOR_TIMEOUT_CARD charges, then times out: the outcome is unknown to
      the caller until reconciled with `lookup`;
    - bank transfers stay pending until `confirm_transfer`.
    Charges are idempotent by key: the same key never charges twice.
    """

    __test__ = False  # not a pytest test class
    CHARGE_FAILURES = {"4000000000009995": "insufficient_funds", "4000000000000119": "processing_error"}

    def tokenize_card(self, *, number: str, exp_month: int, exp_year: int, cvc: str, brand: str) -> CardToken:
        from billing.models import TestProcessorToken

        if number == "4000000000000002":
            raise PaymentError("card_declined", reason_for("card_declined"))
        if number == settings.TEST_PROCESSOR_TIMEOUT_CARD:
            behaviour = "timeout"
        else:
            behaviour = self.CHARGE_FAILURES.get(number, "succeed")
        # A token derived from the number would let it be recovered; a random one cannot.
        token = TestProcessorToken.objects.create(token=f"tok_test_{secrets.token_hex(12)}", behaviour=behaviour)
        return CardToken(token=token.token, brand=brand, last4=number[-4:])

    def charge(self, *, token: str, amount: Decimal, idempotency_key: str) -> ChargeResult:
        from billing.models import TestProcessorCharge, TestProcessorToken

        existing = TestProcessorCharge.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return self._result(existing)
        card = TestProcessorToken.objects.filter(token=token).first()
        behaviour = card.behaviour if card else "succeed"
        if behaviour in FailureCode.values:
            self._record(idempotency_key, token, amount, "failed", behaviour)
            raise PaymentError(behaviour, reason_for(behaviour))
        charge = self._record(idempotency_key, token, amount, "succeeded", "")
        if behaviour == "timeout":
            raise ProcessorTimeout(idempotency_key)
        return self._result(charge)

    def start_bank_transfer(self, *, amount: Decimal, idempotency_key: str) -> ChargeResult:
        from billing.models import TestProcessorCharge

        existing = TestProcessorCharge.objects.filter(idempotency_key=idempotency_key).first()
        return self._result(existing or self._record(idempotency_key, "", amount, "pending", ""))

    def confirm_transfer(self, *, reference: str) -> None:
        """What the bank does when the money arrives (staff press it in the admin)."""
        from billing.models import TestProcessorCharge

        TestProcessorCharge.objects.filter(reference=reference, status="pending").update(status="succeeded")

    def refund(self, *, reference: str, amount: Decimal, idempotency_key: str) -> ChargeResult:
        """Pay back (part of) a charge to where it came from. Idempotent by key."""
        from billing.models import TestProcessorCharge

        existing = TestProcessorCharge.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return self._result(existing)
        charge = TestProcessorCharge.objects.filter(reference=reference, status="succeeded").first()
        if charge is None or amount > charge.amount:
            raise PaymentError("refund_refused", reason_for("refund_refused"))
        return self._result(self._record(idempotency_key, charge.token, -amount, "refunded", ""))

    def lookup(self, *, idempotency_key: str):
        """The processor's own record of a charge: ChargeResult, a PaymentError, or None if none."""
        from billing.models import TestProcessorCharge

        charge = TestProcessorCharge.objects.filter(idempotency_key=idempotency_key).first()
        if charge is None:
            return None
        if charge.status == "failed":
            return PaymentError(charge.failure_code, reason_for(charge.failure_code))
        return self._result(charge)

    def _record(self, idempotency_key, token, amount, status, failure_code):
        from billing.models import TestProcessorCharge

        try:
            with transaction.atomic():
                return TestProcessorCharge.objects.create(
                    idempotency_key=idempotency_key,
                    token=token,
                    amount=amount,
                    status=status,
                    failure_code=failure_code,
                    reference=f"ch_test_{secrets.token_hex(10)}",
                )
        except IntegrityError:  # the same key arrived twice at once: one charge only
            return TestProcessorCharge.objects.get(idempotency_key=idempotency_key)

    @staticmethod
    def _result(charge) -> ChargeResult:
        if charge.status == "failed":
            raise PaymentError(charge.failure_code, reason_for(charge.failure_code))
        return ChargeResult(status=charge.status, reference=charge.reference)


@cache
def get_processor():
    return import_string(settings.PAYMENT_PROCESSOR)()
