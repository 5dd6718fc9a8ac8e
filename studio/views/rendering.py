"""One URL, one template: htmx requests get a named partial of the same template."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django_htmx.http import retarget, trigger_client_event

# Client event names, listened to in templates and static/js/console.js.
CLOSE_MODAL = "close-modal"
KEYS_CHANGED = "keys-changed"
BILLING_CHANGED = "billing-changed"
LIMITS_CHANGED = "limits-changed"

# The frame partials/dialog.html extends for htmx requests: the dialog's content alone.
DIALOG_FRAGMENT = "partials/dialog_fragment.html"


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
    if _wants_partial(request):
        # `partial_only` lets a partial add out-of-band pieces that only a swap needs.
        template, context = f"{template}#{partial}", {**context, "partial_only": True}
    return _respond(request, template, context, status=status, secret=secret)


def render_dialog(
    request: HttpRequest, template: str, context: dict, *, status: int = 200, secret: bool = False
) -> HttpResponse:
    """Render a dialog: a template that extends partials/dialog.html.

    Without JS it is a page of its own; an htmx request gets only the dialog's content, which
    static/js/console.js shows in the page's <dialog id="modal">. Same `secret` as render_page.
    """
    if _wants_partial(request):
        context = {**context, "dialog_frame": DIALOG_FRAGMENT}
    return _respond(request, template, context, status=status, secret=secret)


def _wants_partial(request: HttpRequest) -> bool:
    # Boosted links and forms, and history restores (back button), swap the whole page.
    return bool(request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request)


def _respond(request: HttpRequest, name: str, context: dict, *, status: int, secret: bool) -> HttpResponse:
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
