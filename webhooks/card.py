"""GET /card/<token>: the customer's own page, the link CRM mailings carry.

No sign-in: the unguessable token is the credential (connector.card.tokens). Every request
first counts against its client address (`card.rate_limit`); over it answers 429 with
Retry-After. An unknown, rotated or malformed token, or card pages turned off, answer the
same 404 by the same steps. Refusals are JSON (`{"error", "detail"}`) like every route's,
or a short page in the program's language for a browser that asks for HTML. The page loads
nothing and runs nothing: inline styles and SVG only, no referrer sent anywhere.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, render_template, request

from connector.card import page, reading
from connector.card.ratelimit import ClientLimiter, client_address
from connector.i18n import Translator
from connector.services import Services
from webhooks.errors import error_response

bp = Blueprint("card", __name__)
LIMITER = "card_limiter"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    # The token is in the URL: no cache keeps it, no link followed from the page sends it.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
}


def init_app(app: Flask, services: Services) -> None:
    app.extensions[LIMITER] = ClientLimiter(services.settings.card.rate_limit)
    app.register_blueprint(bp)


@bp.after_request
def protect(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _refusal(status: int, code: str, detail: str, *, title: str, text: str,
             headers: dict[str, str] | None = None) -> Response:
    wants_html = request.accept_mimetypes.best_match(
        ["application/json", "text/html"]) == "text/html"
    if not wants_html:
        return error_response(status, code, detail, headers=headers)
    response = Response(render_template("card_refusal.html", title=title, text=text),
                        status=status)
    response.headers.update(headers or {})
    return response


@bp.get("/card/<token>")
def show(token: str) -> Response | str:
    services: Services = current_app.extensions["loyalty"]
    settings = services.settings
    t: Translator = current_app.extensions["i18n"]
    wait = current_app.extensions[LIMITER].hit(client_address(
        request.remote_addr, request.headers.get("X-Forwarded-For"),
        settings.card.trusted_proxies))
    if wait is not None:
        return _refusal(429, "too_many_requests", f"too many card page requests from this "
                        f"address: try again in {wait} s", title=t._("Too many requests"),
                        text=t._("Please try again in %(seconds)s s.", seconds=wait),
                        headers={"Retry-After": str(wait)})
    account_id = services.cards.find(token) if services.cards.enabled else None
    now = services.ledger.clock()
    found = None if account_id is None else reading.read(
        services.db, services.program, account_id, now, entries=settings.card.history_entries)
    if found is None:
        return _refusal(404, "card_not_found", "no card page at this address (a link stops "
                        "working when it is replaced)", title=t._("Card not found"),
                        text=t._("The link is out of date or mistyped. Your manager can "
                                 "send a new one."))
    view, entries = found
    return render_template("card.html", p=page.build(view, entries, settings.program, now, t))
