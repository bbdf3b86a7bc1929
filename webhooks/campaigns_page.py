"""GET /dashboard/campaigns and /dashboard/campaigns/<name>: the control groups and each
test's report as a page, signed in as /dashboard is. Charts are inline SVG drawn here: the
groups side by side per figure, and each difference with its 95% interval against zero."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from flask import Blueprint, current_app, render_template

from connector.campaigns.figures import Interval
from connector.campaigns.groups import CONTROL, TREATED
from connector.campaigns.report import Report, report, summaries
from connector.campaigns.text import interval_text, kind_name, percentage_points
from connector.i18n import N_, Translator
from connector.services import Services
from webhooks import dashboard

bp = Blueprint("campaigns_page", __name__)
bp.before_request(dashboard.require_admin_token)
bp.after_request(dashboard.protect)

WIDTH, LABEL, ROW = 1100, 270, 30
FIGURES = (("purchase_rate", N_("purchase rate")), ("average_check", N_("average check")),
           ("revenue_per_customer", N_("revenue per customer")))
GROUP_NAMES = {TREATED: N_("treated"), CONTROL: N_("control")}


@dataclass(frozen=True)
class GroupBar:
    group: str
    label: str
    y: float
    width: float
    text: str


@dataclass(frozen=True)
class IntervalRow:
    label: str
    y: float
    low: float
    high: float
    point: float
    text: str
    clear: bool  # the interval leaves out zero


@dataclass(frozen=True)
class IntervalChart:
    rows: list[IntervalRow]
    zero: float
    height: int


def _services() -> Services:
    return current_app.extensions["loyalty"]


def group_bars(result: Report, t: Translator, shown: dict[str, Callable[[Decimal | None], str]]
               ) -> tuple[list[GroupBar], int]:
    """Per figure, the treated and control values as bars, each figure on its own scale."""
    bars: list[GroupBar] = []
    y = 0.0
    span = WIDTH - LABEL - 160
    for key, title in FIGURES:
        values = {name: getattr(result.groups[name], key) for name in (TREATED, CONTROL)}
        largest = max((v for v in values.values() if v is not None), default=Decimal(0))
        for name in (TREATED, CONTROL):
            value = values[name]
            share = float(value / largest) if value is not None and largest > 0 else 0.0
            label = f"{title.render(t)} · {GROUP_NAMES[name].render(t)}"
            bars.append(GroupBar(name, label, y, max(share, 0.0) * span, shown[key](value)))
            y += ROW
        y += ROW / 2
    return bars, int(y)


def interval_chart(result: Report, t: Translator,
                   shown: dict[str, Callable[[Decimal | None], str]]) -> IntervalChart:
    """Each difference and its interval on a scale of its own, centred on zero, so "does
    the interval leave out zero" reads the same for every figure."""
    half = (WIDTH - LABEL - 260) / 2
    zero = LABEL + half
    rows: list[IntervalRow] = []
    for index, (key, title) in enumerate(FIGURES):
        value: Interval | None = getattr(result, key)
        y = index * ROW * 1.5
        if value is None:
            rows.append(IntervalRow(title.render(t), y, zero, zero, zero,
                                    t._("no interval: too few customers"), False))
            continue
        extent = max(abs(value.low), abs(value.high), abs(value.difference)) or Decimal(1)

        def x(number: Decimal, extent: Decimal = extent) -> float:
            return zero + float(number / extent) * half

        rows.append(IntervalRow(title.render(t), y, x(value.low), x(value.high),
                                x(value.difference), interval_text(value, shown[key]),
                                value.low > 0 or value.high < 0))
    return IntervalChart(rows, zero, int(len(FIGURES) * ROW * 1.5))


@bp.get("/dashboard/campaigns")
def campaigns() -> str:
    services = _services()
    with services.db.transaction(write=False) as session:
        rows = summaries(session, services.program, services.ledger.clock())
    t: Translator = current_app.extensions["i18n"]
    return render_template("campaigns.html", rows=rows, kind=lambda k: kind_name(k, t),
                           number=t.number, percent=t.percent)


@bp.get("/dashboard/campaigns/<name>")
def campaign(name: str) -> str:
    """One test's report; an unknown name is the JSON 404 every refusal is."""
    services = _services()
    with services.db.transaction(write=False) as session:
        result = report(session, services.program, name, services.ledger.clock())
    t: Translator = current_app.extensions["i18n"]
    currency = services.settings.program.currency

    def money(value: Decimal | None) -> str:
        return t.money(value, currency)

    def rate(value: Decimal | None) -> str:
        return t.percent(value, 1)

    shown = {"purchase_rate": rate, "average_check": money, "revenue_per_customer": money}
    bars, bars_height = group_bars(result, t, shown)
    # A difference of rates is in percentage points, not percent.
    differences = {**shown, "purchase_rate": lambda v: percentage_points(v, t)}
    return render_template(
        "campaign.html", r=result, test=result.test, kind=kind_name(result.test.kind, t),
        treated=result.groups[TREATED], control=result.groups[CONTROL],
        bars=bars, bars_height=bars_height, intervals=interval_chart(result, t, differences),
        width=WIDTH, label_width=LABEL, money=money, rate=rate, number=t.number,
        percent=t.percent, zone=services.settings.program.zone,
        moment=lambda value: t.moment(value, services.settings.program.zone))
