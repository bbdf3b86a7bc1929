"""GET /dashboard/nps: the NPS of the last N days, its monthly course as an inline SVG chart,
and the split by tier and RFM segment. Signed in and protected as /dashboard is."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from flask import Blueprint, current_app, render_template

from connector import periods
from connector.i18n import Translator
from connector.nps.report import Month, NPSReport, Tally, nps_report
from connector.services import Services
from webhooks.dashboard import PERIODS, protect, require_admin_token
from webhooks.validation import query_int

bp = Blueprint("nps_dashboard", __name__)
bp.before_request(require_admin_token)
bp.after_request(protect)
MAX_DAYS = 3660
CHART_WIDTH, CHART_HEIGHT = 1100, 280
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 56, 10, 22, 30
Y_TICKS = (-100, -50, 0, 50, 100)


@dataclass(frozen=True)
class Column:
    x: float
    y: float
    width: float
    height: float
    positive: bool
    label: str  # the month
    value: str  # the NPS as shown, "—" without answers
    value_y: float
    title: str


@dataclass(frozen=True)
class NPSChart:
    width: int
    height: int
    left: float
    right: float
    zero: float
    y_ticks: list[tuple[float, str]]
    columns: list[Column]
    empty: bool


def _y(value: float) -> float:
    """-100..100 onto the plot, 100 at the top."""
    plot = CHART_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    return PLOT_TOP + (100 - value) / 200 * plot


def nps_chart(months: list[Month], t: Translator) -> NPSChart:
    """A column per month from the zero line up (NPS above 0) or down; its value above or
    below it, with the answers counted."""
    band = (CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(len(months), 1)
    columns = []
    for index, month in enumerate(months):
        nps = month.tally.nps
        value = 0.0 if nps is None else float(nps)
        top, bottom = _y(max(value, 0.0)), _y(min(value, 0.0))
        x = PLOT_LEFT + index * band + band * 0.2
        shown = "—" if nps is None else t.number(nps, 1)
        label = t.month(month.start)
        columns.append(Column(
            x, top, band * 0.6, max(bottom - top, 0.0), value >= 0, label, shown,
            top - 6 if value >= 0 else bottom + 14,
            t._("%(month)s: NPS %(nps)s of %(answers)s answered", month=label, nps=shown,
                answers=t.number(month.tally.answers))))
    return NPSChart(CHART_WIDTH, CHART_HEIGHT, PLOT_LEFT, CHART_WIDTH - PLOT_RIGHT, _y(0),
                    [(_y(tick), t.number(tick)) for tick in Y_TICKS], columns,
                    empty=not any(month.tally.answers for month in months))


def share(part: int, tally: Tally) -> Decimal | None:
    return Decimal(part) / tally.answers if tally.answers else None


@bp.get("/dashboard/nps")
def show() -> str:
    services: Services = current_app.extensions["loyalty"]
    program = services.settings.program
    days = query_int("days", minimum=1, maximum=MAX_DAYS) or program.nps.report_days
    # The last N days as every report reads them (connector.periods).
    since, now = periods.last_days(services.ledger.clock(), days, program.zone)
    with services.db.transaction(write=False) as session:
        report: NPSReport = nps_report(session, [tier.name for tier in program.tiers],
                                       program.zone, since=since, until=now)
    t: Translator = current_app.extensions["i18n"]
    labels = services.settings.rfm.labels
    return render_template(
        "nps.html", r=report, days=days, periods=sorted({*PERIODS, program.nps.report_days}),
        chart=nps_chart(report.by_month, t), share=share, number=t.number,
        percent=t.percent, local=lambda moment: t.moment(moment, program.zone),
        zone=program.zone.key, bonus=program.nps.bonus,
        segments=[(labels.get(code, code) if code else t._("not scored"), tally)
                  for code, tally in report.by_segment.items()],
        score=lambda tally: "—" if tally.nps is None else t.number(tally.nps, 1))
