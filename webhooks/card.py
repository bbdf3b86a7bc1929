"""GET /card/<token>: the customer's own page, the link CRM mailings carry.

No sign-in: the unguessable token is the credential (connector.card.tokens). Every request
first counts against its client address (`card.rate_limit`); over it answers 429 with
Retry-After. An unknown, rotated or malformed token, or card pages turned off, answer the
same 404 by the same steps. Refusals are JSON (`{"error", "detail"}`) like every route's,
or a short page in the program's language for a browser that asks for HTML. The page loads
nothing and runs nothing: inline styles and SVG only, no referrer sent anywhere.

POST /card/<token>/rewards/<id> claims a reward (its form on the page): the form carries a
key drawn when the page was shown, so sending it twice (a double tap, a reload) claims once.
The answer is the page again, saying what came of it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace
from datetime import datetime

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from connector.card import page, reading
from connector.card.page import CardPage
from connector.card.ratelimit import ClientLimiter, client_address
from connector.errors import AccountNotFoundError, RewardNotFoundError, RewardRefusedError
from connector.i18n import Message, Translator
from connector.ledger.views import AccountView
from connector.rewards import card as reward_card
from connector.services import Services
from webhooks.errors import error_response

bp = Blueprint("card", __name__)
LIMITER = "card_limiter"
FORM_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
REWARD_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
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


def _limited() -> Response | None:
    services: Services = current_app.extensions["loyalty"]
    settings = services.settings
    t: Translator = current_app.extensions["i18n"]
    wait = current_app.extensions[LIMITER].hit(client_address(
        request.remote_addr, request.headers.get("X-Forwarded-For"),
        settings.card.trusted_proxies))
    if wait is None:
        return None
    return _refusal(429, "too_many_requests", f"too many card page requests from this "
                    f"address: try again in {wait} s", title=t._("Too many requests"),
                    text=t._("Please try again in %(seconds)s s.", seconds=wait),
                    headers={"Retry-After": str(wait)})


def _not_found() -> Response:
    t: Translator = current_app.extensions["i18n"]
    return _refusal(404, "card_not_found", "no card page at this address (a link stops "
                    "working when it is replaced)", title=t._("Card not found"),
                    text=t._("The link is out of date or mistyped. Your manager can "
                             "send a new one."))


def _page(account_id: int, now: datetime) -> tuple[AccountView, CardPage] | None:
    services: Services = current_app.extensions["loyalty"]
    t: Translator = current_app.extensions["i18n"]
    settings = services.settings
    found = reading.read(services.db, services.program, account_id, now,
                         entries=settings.card.history_entries)
    if found is None:
        return None
    view, entries = found
    built = page.build(view, entries, settings.program, now, t)
    rewards = reward_card.section(view, services.rewards.list(),
                                  services.claims.list(ref=view.ref, limit=20),
                                  settings.program, now, t)
    return view, replace(built, rewards=rewards)


def _render(built: CardPage, token: str, status: int = 200) -> Response:
    return Response(render_template("card.html", p=built, claim_url=f"/card/{token}/rewards/",
                                    form_key=secrets.token_urlsafe(24)), status=status)


@bp.get("/card/<token>")
def show(token: str) -> Response | str:
    services: Services = current_app.extensions["loyalty"]
    if (limited := _limited()) is not None:
        return limited
    account_id = services.cards.find(token) if services.cards.enabled else None
    found = None if account_id is None else _page(account_id, services.ledger.clock())
    if found is None:
        return _not_found()
    return _render(found[1], token)


@bp.post("/card/<token>/rewards/<reward_id>")
def claim(token: str, reward_id: str) -> Response:
    """The customer claims a reward from the page; the page again says what came of it
    (in the program's language), a JSON answer in English like every JSON answer."""
    services: Services = current_app.extensions["loyalty"]
    if (limited := _limited()) is not None:
        return limited
    account_id = services.cards.find(token) if services.cards.enabled else None
    found = None if account_id is None else _page(account_id, services.ledger.clock())
    if found is None or account_id is None:
        return _not_found()
    view = found[0]
    key = request.form.get("key", "")
    if not FORM_KEY.fullmatch(key) or not REWARD_ID.fullmatch(reward_id):
        return error_response(400, "invalid_request", "send the page's form: key and a "
                                                      "reward id")
    t: Translator = current_app.extensions["i18n"]
    notice: Message
    try:
        # The page's key with the reward: each offer on one page is claimed once.
        claimed = services.claims.claim(view.ref, reward_id,
                                        key=f"card:{account_id}:{reward_id}:{key}",
                                        via="card", actor="customer")
    except RewardRefusedError as exc:
        notice = reward_card.refusal(exc.reason, tier=str(exc.context.get("tier")))
        status, ok, body = 409, False, None
    except (RewardNotFoundError, AccountNotFoundError):
        notice = reward_card.refusal("disabled")
        status, ok, body = 404, False, None
    else:
        notice = reward_card.outcome(claimed.claim)
        status = 200 if claimed.result.duplicate else 201
        ok, body = claimed.claim.status != "cancelled", claimed.claim.as_json()
    wants_json = request.accept_mimetypes.best_match(
        ["application/json", "text/html"]) == "application/json"
    if wants_json:
        if body is None:
            return error_response(status, "reward_refused", str(notice))
        answer = jsonify(claim=body, notice=str(notice), ok=ok)
        answer.status_code = status  # 201 for a new claim, 200 for the same form again
        return answer
    again = _page(account_id, services.ledger.clock())
    built = (again or found)[1]
    assert built.rewards is not None
    return _render(replace(built, rewards=replace(built.rewards, notice=notice.render(t),
                                                  notice_ok=ok)), token, status)
