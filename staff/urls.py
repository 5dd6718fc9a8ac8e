"""/staff/: the staff console (SPEC §10). Each area's views module lists its own URLs."""

from staff.views import audit, customers, finance, home, promotions, quotas, security

app_name = "staff"
urlpatterns = [
    *home.urlpatterns,
    *security.urlpatterns,
    *customers.urlpatterns,
    *audit.urlpatterns,
    *finance.urlpatterns,
    *quotas.urlpatterns,
    *promotions.urlpatterns,
]
