"""One URL, one template: htmx requests get a named partial of the same template."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django_htmx.http import retarget, trigger_client_event

# Client event names, listened to in templates and static/js/console.js.
CLOSE_MODAL = "close-modal"
KEYS_CHANGED = "keys-changed"


def render_page(
    request: HttpRequest,
    template: str,
    context: dict,
    *,
    partial: str = "body",
    status: int = 200,
    secret: bool = False,
) -> HttpResponse:
    """Render `template`, or only its `partial` for an htmx request.

    `secret=True` marks a response that shows a secret once: it must never be cached.
    """
    # Boosted links and forms, and history restores (back button), swap the whole page.
    wants_partial = request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request
    name = f"{template}#{partial}" if wants_partial else template
    response = render(request, name, context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    if secret:
        add_never_cache_headers(response)
    return response


def finish(
    request: HttpRequest, message: str, *, redirect_to: str, events: tuple[str, ...] = (), level: int = messages.SUCCESS
) -> HttpResponse:
    """After a change made in a modal: show `message`.

    htmx: the modal closes, the message appears in the page's message area and `events` fire
    (a table reloads itself, say). Without JS: redirect to `redirect_to`, where it shows.
    """
    messages.add_message(request, level, message)
    if not request.htmx:
        return redirect(redirect_to)
    response = retarget(render(request, "base.html#messages"), "#messages")
    for event in (*events, CLOSE_MODAL):
        response = trigger_client_event(response, event)
    return response
