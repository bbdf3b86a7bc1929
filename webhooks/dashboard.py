"""GET /dashboard: a read-only page of the program's figures and the service's health.

Signed in with HTTP Basic (any user name, server.admin_token as the password: what a browser
asks for) or `Authorization: Bearer <server.admin_token>` (what a script sends). Without an
admin token configured it answers 403, as /api/v1 does. Refusals are JSON
(`{"error", "detail"}`) like every other route's. Charts are inline SVG drawn here, so
the page needs no JavaScript and nothing from the internet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from flask import Blueprint, Response, current_app, render_template, request

from connector import dashboard, periods
from connector.dashboard import Bucket
from connector.economics import table as simulation_table
from connector.economics.proposal import form_values, proposed_program
from connector.economics.simulate import simulate as replay
from connector.errors import ConfigError
from connector.i18n import CURRENCY_SIGNS, N_, Translator
from connector.services import Services
from webhooks.auth import configured, require
from webhooks.validation import query_int

bp = Blueprint("dashboard", __name__)
PERIODS = (7, 30, 90, 365)
# No script may run and nothing may load: the page is markup and inline styles only.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
CHART_WIDTH, CHART_HEIGHT = 1100, 300
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 70, 10, 12, 30
MAX_X_LABELS = 12
KIND_NAMES = {"accrual": N_("accrued"), "bonus": N_("bonuses"), "redemption": N_("redeemed"),
              "expiry": N_("expired")}
STEP_TITLES = {"day": N_("Points per day"), "week": N_("Points per week"),
               "month": N_("Points per month")}
JOB_STATUSES = {"ok": N_("ok"), "failed": N_("failed"), "running": N_("running")}
# The what-if table's figures, as connector.economics.table names them (the CLI's English).
SIMULATION_ROWS = {
    "points issued": N_("points issued"), "taken back by returns": N_("taken back by returns"),
    "bonuses": N_("bonuses"), "expected redemptions": N_("expected redemptions"),
    "expected breakage": N_("expected breakage"),
    "outstanding points at end": N_("outstanding points at end"),
    "liability at end": N_("liability at end"), "cost / revenue": N_("cost / revenue"),
    "tiers at end": N_("tiers at end"),
}


@bp.before_request
def require_admin_token() -> None:
    services: Services = current_app.extensions["loyalty"]
    # Basic, so that a browser asks for the password instead of showing the refusal.
    require(configured(services.settings.server.admin_token), basic=True,
            disabled=("dashboard_disabled", "set server.admin_token (or "
                                            "LOYALTY_SERVER__ADMIN_TOKEN) to enable /dashboard"),
            refused="sign in with any user name and server.admin_token as the password",
            challenge='Basic realm="loyalty"')


@bp.after_request
def protect(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if request.endpoint == "dashboard.simulate":  # its form submits to itself
        response.headers["Content-Security-Policy"] = SECURITY_HEADERS[
            "Content-Security-Policy"].replace("form-action 'none'", "form-action 'self'")
    return response


@bp.get("/dashboard/simulate")
def simulate() -> tuple[str, int]:
    """What-if: the book replayed under the form's thresholds, rates and multiplier beside
    the current program (GET: it only reads). The first visit shows the form alone."""
    services: Services = current_app.extensions["loyalty"]
    current = services.settings.program
    days = query_int("days", minimum=1, maximum=dashboard.MAX_DAYS) or dashboard.DEFAULT_DAYS
    # The last N days as every report reads them (connector.periods).
    since, now = periods.last_days(services.ledger.clock(), days, current.zone)
    values = {**form_values(current), **{k: v for k, v in request.args.items()
                                         if k != "days"}}
    problems: list[str] = []
    result = None
    if "run" in request.args:
        try:
            proposed = proposed_program(current, request.args, since=since, now=now)
            result = replay(services.db, current, proposed, since=since, now=now)
        except ConfigError as exc:
            problems = exc.problems
    t: Translator = current_app.extensions["i18n"]
    rows = [(SIMULATION_ROWS[label].render(t) if label in SIMULATION_ROWS else label, now, then)
            for label, now, then in (simulation_table.rows(result) if result else [])]
    html = render_template(
        "simulate.html", tiers=current.tiers, values=values, days=days, periods=PERIODS,
        problems=problems, result=result, rows=rows)
    return html, 400 if problems else 200


@bp.get("/dashboard")
def show() -> str:
    services: Services = current_app.extensions["loyalty"]
    days = query_int("days", minimum=1, maximum=dashboard.MAX_DAYS) or dashboard.DEFAULT_DAYS
    board = dashboard.build(services, now=services.ledger.clock(), days=days)
    t: Translator = current_app.extensions["i18n"]
    currency = services.settings.program.currency
    return render_template(
        "dashboard.html", d=board, days=days, periods=PERIODS,
        segment_labels=[(code, label) for code, label in services.settings.rfm.labels.items()
                        if code in board.segments],
        chart=points_chart(board.series, board.step, t),
        tiers=bars(list(board.stats.tiers.items())),
        segments=bars([(code or t._("not scored"), size)
                       for code, size in board.segments.items()]),
        number=t.number, percent=t.percent, money=lambda value: t.money(value, currency),
        currency_sign=CURRENCY_SIGNS.get(currency, currency),
        local=lambda moment: t.moment(moment, board.zone), age=t.duration,
        kind_names={kind: name.render(t) for kind, name in KIND_NAMES.items()},
        step_titles={step: title.render(t) for step, title in STEP_TITLES.items()},
        job_status=lambda status: JOB_STATUSES[status].render(t) if status in JOB_STATUSES
        else status or "—")


# -- charts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class ColumnChart:
    width: int
    height: int
    left: float
    right: float
    zero: float
    rects: list[Rect]
    y_ticks: list[Tick]
    x_labels: list[Tick]
    empty: bool


def nice_step(span: Decimal, ticks: int = 5) -> Decimal:
    """A round step (1, 2 or 5 times a power of ten) giving about `ticks` steps over `span`."""
    if span <= 0:
        return Decimal(1)
    raw = span / ticks
    power = Decimal(10) ** math.floor(math.log10(raw))
    return next(factor * power for factor in (1, 2, 5, 10) if factor * power >= raw)


def _bucket_label(start: date, step: str, t: Translator) -> str:
    return t.month(start) if step == "month" else t.short_date(start)


def points_chart(series: list[Bucket], step: str, t: Translator) -> ColumnChart:
    """Stacked columns per bucket: accrued and bonus points up, redeemed and expired down."""
    credits = [b.points["accrual"] + b.points["bonus"] for b in series]
    debits = [-(b.points["redemption"] + b.points["expiry"]) for b in series]
    top_value, bottom_value = max(credits, default=Decimal(0)), max(debits, default=Decimal(0))
    unit = nice_step(top_value + bottom_value)
    top = math.ceil(top_value / unit) * unit
    bottom = math.ceil(bottom_value / unit) * unit
    if top + bottom == 0:
        top = unit
    plot_height = CHART_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    scale = plot_height / float(top + bottom)

    def y(value: Decimal) -> float:
        return PLOT_TOP + float(top - value) * scale

    band = (CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(len(series), 1)
    rects: list[Rect] = []
    for index, bucket in enumerate(series):
        x = PLOT_LEFT + index * band + band * 0.15
        label = _bucket_label(bucket.start, step, t)
        # Each kind stacks on the ones before it, away from the zero line.
        up = down = Decimal(0)
        for kind in dashboard.SERIES_KINDS:
            value = bucket.points[kind]
            if value == 0:
                continue
            start = up if value > 0 else down
            end = start + value
            up, down = (end, down) if value > 0 else (up, end)
            rects.append(Rect(x, y(max(start, end)), band * 0.7, abs(float(value)) * scale,
                              kind, f"{label}: {KIND_NAMES[kind].render(t)} "
                                    f"{t.number(abs(value))}"))
    y_ticks = [Tick(y(value), t.number(value))
               for value in _range(-bottom, top, unit)]
    every = math.ceil(len(series) / MAX_X_LABELS) or 1
    x_labels = [Tick(PLOT_LEFT + (index + 0.5) * band, _bucket_label(bucket.start, step, t))
                for index, bucket in enumerate(series) if index % every == 0]
    return ColumnChart(CHART_WIDTH, CHART_HEIGHT, PLOT_LEFT, CHART_WIDTH - PLOT_RIGHT,
                       y(Decimal(0)), rects, y_ticks, x_labels,
                       empty=not any(credits) and not any(debits))


def _range(start: Decimal, stop: Decimal, step: Decimal) -> list[Decimal]:
    return [start + step * index for index in range(int((stop - start) / step) + 1)]


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    share: float  # of the largest value, for the bar's length
    of_total: Decimal | None  # of all values, for the text


def bars(items: list[tuple[str, int]]) -> list[Bar]:
    largest = max((value for _, value in items), default=0)
    total = sum(value for _, value in items)
    return [Bar(label, value, value / largest if largest else 0.0,
                Decimal(value) / total if total else None) for label, value in items]
