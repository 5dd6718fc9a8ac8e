from django.http import HttpRequest, HttpResponse
from django.urls import path

from staff.access import staff_view
from staff.nav import navigation
from studio.views.rendering import render_page


@staff_view()
def home(request: HttpRequest) -> HttpResponse:
    """What is waiting: each queue this staff member may work on, with its count."""
    queues = [item for item in navigation(request) if item.count is not None]
    return render_page(request, "staff/home.html", {"queues": queues})


urlpatterns = [path("", home, name="home")]
