"""POST /bitrix24/tab: the "Loyalty" tab in Bitrix24 contact and deal cards; POST
/bitrix24/tab/change: a grant or redemption sent from it.

Opening is authenticated by the placement call's AUTH_ID, checked with the configured
portal (connector.bitrix24.tab); a change by the signed form token the page carried
(tab_forms), so no cookie is needed inside Bitrix24's iframe. Refusals of either are JSON
(`{"error", "detail"}`) like every route's; a manager's mistake in a form (no reason, more
points than the balance) comes back as the page with the reason shown, in the status the
API would answer. The page is markup and inline styles: no script, nothing from the
internet, and only the configured portal may frame it.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask import Blueprint, Response, current_app, render_template, request

from connector.bitrix24.tab import TAB_PATH, Bitrix24Tab, TabPage, TabRefused, parse_call
from connector.errors import LedgerError
from connector.i18n import N_, Translator
from connector.ledger.views import Result
from connector.services import Services
from webhooks.bitrix24 import require_enabled
from webhooks.errors import LEDGER_DEFAULT_STATUS, LEDGER_STATUS, ApiError, error_response
from webhooks.validation import check_amount, check_text

bp = Blueprint("bitrix24_tab", __name__, url_prefix="/bitrix24/tab")
REASON_MAX = 500
KIND_NAMES = {"accrual": N_("purchase"), "redemption": N_("redeemed"),
              "reversal": N_("reversal"), "expiry": N_("expired"),
              "adjustment": N_("adjustment"), "bonus": N_("bonus"),
              "reward": N_("reward"), "opening": N_("opening balance")}


def _services() -> Services:
    return current_app.extensions["loyalty"]  # type: ignore[no-any-return]


def _tab() -> Bitrix24Tab:
    services = _services()
    require_enabled(services)
    assert services.bitrix24 is not None
    return services.bitrix24.tab


@bp.errorhandler(TabRefused)
def refused(exc: TabRefused) -> Response:
    return error_response(exc.status, exc.code, exc.detail)


@bp.after_request
def protect(response: Response) -> Response:
    settings = _services().settings.bitrix24
    # Framed by the configured portal alone; forms post back here; nothing else loads.
    portal = settings.rest_url.removesuffix("/rest/")
    response.headers.update({
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   f"frame-ancestors {portal}; base-uri 'none'; "
                                   "form-action 'self'",
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff"})
    return response


@bp.post("")
def open_tab() -> str:
    tab = _tab()
    # DOMAIN, PROTOCOL, LANG and APP_SID come in the handler URL's query, the rest as form
    # fields (widget_data.md): read both.
    page = tab.open(parse_call(request.values.to_dict()))
    return _render(page)


@bp.post("/change")
def change() -> tuple[str, int] | str:
    tab = _tab()
    grant = tab.forms.verify(request.form.get("form", ""))
    manager, customer = tab.from_form(grant)
    try:
        points = check_amount("points", request.form.get("points", "").strip())
        reason = check_text("reason", request.form.get("reason", "").strip(),
                            max_length=REASON_MAX)
        result = tab.change(grant, points, reason)
    except (ApiError, LedgerError) as exc:
        return _refused(tab.page(manager, customer), exc)
    return _render(tab.page(manager, customer), notice=_notice(grant.operation, result))


@bp.post("/reward")
def reward() -> tuple[str, int] | str:
    """A manager claims a reward for the customer from the tab's reward form."""
    tab = _tab()
    grant = tab.forms.verify(request.form.get("form", ""))
    manager, customer = tab.from_form(grant)
    try:
        wanted = check_text("reward", request.form.get("reward", "").strip(), max_length=48)
        claimed = tab.claim(grant, wanted)
    except (ApiError, LedgerError) as exc:
        return _refused(tab.page(manager, customer), exc)
    t: Translator = current_app.extensions["i18n"]
    text = t._("%(reward)s claimed: code %(code)s, %(points)s; balance %(balance)s",
               reward=claimed.claim.reward_name, code=claimed.claim.code,
               points=t.points(-claimed.result.points),
               balance=t.number(claimed.result.balance))
    if claimed.result.duplicate:
        text = t._("%(done)s (this form was already sent: applied once)", done=text)
    return _render(tab.page(manager, customer), notice=text)


def _refused(page: TabPage, exc: ApiError | LedgerError) -> tuple[str, int]:
    """The tab again with why a form was refused, under the status the API gives it."""
    if isinstance(exc, ApiError):
        status = exc.status
    else:
        status = next((status for cls, status in LEDGER_STATUS if isinstance(exc, cls)),
                      LEDGER_DEFAULT_STATUS)
    return _render(page, error=exc.detail), status


def _notice(operation: str, result: Result) -> str:
    t: Translator = current_app.extensions["i18n"]
    points, balance = t.points(abs(result.points)), t.number(result.balance)
    text = t._("%(points)s granted; balance %(balance)s", points=points, balance=balance) \
        if operation == "bonus" else \
        t._("%(points)s redeemed; balance %(balance)s", points=points, balance=balance)
    return t._("%(done)s (this form was already sent: applied once)", done=text) \
        if result.duplicate else text


def _render(page: TabPage, *, notice: str | None = None, error: str | None = None) -> str:
    services = _services()
    zone = services.settings.program.zone
    currency = services.settings.program.currency
    t: Translator = current_app.extensions["i18n"]

    def signed(value: Decimal) -> str:
        return f"+{t.number(value)}" if value > 0 else f"−{t.number(-value)}" if value < 0 \
            else "0"

    def day(moment: datetime) -> str:
        return t.date(moment.astimezone(zone).date())

    return render_template(
        "bitrix24_tab.html", p=page, notice=notice, error=error, number=t.number,
        percent=t.percent, points=t.points, money=lambda value: t.money(value, currency),
        signed=signed,
        local=lambda moment: t.moment(moment, zone), day=day,
        kind_names={kind: name.render(t) for kind, name in KIND_NAMES.items()}, card=_card,
        reason_max=REASON_MAX,
        # The handler's public address, as registered: right behind a proxy's path prefix too.
        action=f"{services.settings.server.public_url.rstrip('/')}{TAB_PATH}/change",
        reward_action=f"{services.settings.server.public_url.rstrip('/')}{TAB_PATH}/reward")


def _card(number: str | None) -> str:
    """1234 5678 90: the card number in groups, as printed on a card."""
    if not number:
        return "—"
    return " ".join(number[i:i + 4] for i in range(0, len(number), 4))
