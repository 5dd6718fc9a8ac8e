from django.urls import path

from billing.views import accounts, budgets, prepayment, promotions, setup, tiers
from billing.views import statements as statement_views

app_name = "billing"
urlpatterns = [
    path("", accounts.billing_page, name="page"),
    path("setup/", setup.setup_start, name="setup"),
    path("setup/<uuid:setup_id>/project/", setup.step_project, name="setup-project"),
    path("setup/<uuid:setup_id>/account/", setup.step_account, name="setup-account"),
    path("setup/<uuid:setup_id>/details/", setup.step_details, name="setup-details"),
    path("setup/<uuid:setup_id>/contact/", setup.contact_dialog, name="setup-contact"),
    path("setup/<uuid:setup_id>/payment-method/", setup.payment_method_dialog, name="setup-payment-method"),
    path("setup/<uuid:setup_id>/finish/", setup.finish, name="setup-finish"),
    path("setup/<uuid:setup_id>/status/", setup.status, name="setup-status"),
    path("accounts/<str:account_id>/projects/<str:project_id>/unlink/", accounts.unlink, name="unlink"),
    path("accounts/<str:account_id>/projects/<str:project_id>/move/", accounts.move, name="move"),
    path(
        "accounts/<str:account_id>/payment-methods/<int:method_id>/primary/",
        accounts.make_primary_method,
        name="make-primary",
    ),
    path("prepayment/", prepayment.prepayment_for_project, name="prepayment-for-project"),
    path("accounts/<str:account_id>/prepayment/", prepayment.prepayment, name="prepayment"),
    path(
        "accounts/<str:account_id>/prepayment/<uuid:attempt_id>/",
        prepayment.prepayment_attempt,
        name="prepayment-attempt",
    ),
    path("accounts/<str:account_id>/notice/dismiss/", prepayment.dismiss_notice, name="dismiss-notice"),
    path("accounts/<str:account_id>/refund/", prepayment.refund, name="refund"),
    path("accounts/<str:account_id>/statements/<str:month>/", statement_views.statement, name="statement"),
    path("accounts/<str:account_id>/statements/<str:month>/csv/", statement_views.statement_csv, name="statement-csv"),
    path("accounts/<str:account_id>/statements/<str:month>/pdf/", statement_views.statement_pdf, name="statement-pdf"),
    path("accounts/<str:account_id>/statements/<str:month>/pay/", statement_views.pay, name="statement-pay"),
    path("accounts/<str:account_id>/budgets/new/", budgets.create, name="budget-create"),
    path("accounts/<str:account_id>/budgets/<int:budget_id>/", budgets.edit, name="budget-edit"),
    path("accounts/<str:account_id>/budgets/<int:budget_id>/delete/", budgets.delete, name="budget-delete"),
    path("accounts/<str:account_id>/redeem-code/", promotions.redeem_code, name="redeem-code"),
    path("projects/<str:project_id>/upgrade/", tiers.upgrade, name="upgrade"),
    path("projects/<str:project_id>/tier/", tiers.tier_progress, name="tier-progress"),
    path("payment-methods/add/", accounts.add_payment_method, name="add-payment-method"),
    path("payment-methods/<int:method_id>/remove/", accounts.remove_method, name="remove-payment-method"),
]
