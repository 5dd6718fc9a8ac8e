from django.urls import path

from usage import views

app_name = "usage"
urlpatterns = [
    path("", views.usage_page, name="dashboard"),
    path("export.csv", views.usage_csv, name="export"),
    path("limits/", views.limits_page, name="limits"),
    path("projects/<str:project_id>/spend-cap/", views.spend_cap, name="spend-cap"),
    path("projects/<str:project_id>/quota-request/", views.quota_request, name="quota-request"),
]
