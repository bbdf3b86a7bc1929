"""GET /dashboard/money: the money view (connector.economics.money) as a page, with every
table as CSV at /dashboard/money/<table>.csv. Signed in and protected like /dashboard (the
same before- and after-request hooks); plain HTML and inline SVG bars, no JavaScript.

The period is the dashboard's: `?days=N`, the last N days of program.timezone, today included.
CSV is language-neutral like JSON (English column names, plain decimals), so a spreadsheet
or a script reads it whatever program.language is.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from flask import Blueprint, Response, abort, current_app, render_template

from connector import dashboard, periods
from connector.economics.money import LTVRow, MoneyView, money_view
from connector.i18n import N_, Translator
from connector.services import Services
from webhooks.dashboard import PERIODS, protect, require_admin_token
from webhooks.validation import query_int

bp = Blueprint("dashboard_money", __name__)
bp.before_request(require_admin_token)
bp.after_request(protect)

Cell = str | int | Decimal | None


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]  # CSV header: English, stable
    rows: list[tuple[Cell, ...]]


@dataclass(frozen=True)
class MoneyBar:
    label: str
    value: Decimal
    share: float  # of the largest value, for the bar's length


SUMMARY_NAMES = {
    "liability": N_("Liability"), "expiring_30": N_("Expiring within 30 days"),
    "expiring_90": N_("Expiring within 90 days"), "breakage": N_("Breakage"),
    "cost": N_("Program cost"), "revenue": N_("Members' revenue"),
    "cost_share": N_("Cost / revenue"), "churn": N_("Churn"), "roi": N_("ROI"),
}
HORIZONS = {"within_30_days": N_("within 30 days"), "31_to_90_days": N_("in 31-90 days"),
            "later_or_never": N_("later or never")}
COST_PARTS = {"redeemed": N_("points redeemed"), "rewards": N_("rewards"),
              "tier_discounts": N_("tier discounts")}
TABLE_NAMES = ("summary", "liability", "cost", "ltv-tiers", "ltv-segments")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list for CSV injection


def period_view(services: Services, days: int) -> tuple[MoneyView, datetime]:
    """The view over the dashboard's period: local midnight days-1 days ago until now."""
    now = services.ledger.clock()
    since, _ = periods.last_days(now, days, services.settings.program.zone)
    with services.db.transaction(write=False) as session:
        return money_view(session, services.settings.program, since=since, until=now,
                          at=now), now


def tables(view: MoneyView) -> dict[str, Table]:
    later = max(view.liability - view.expiring_90, Decimal("0.00"))
    later_points = max(view.outstanding_points - view.expiring_90_points, Decimal("0.00"))

    def ltv(rows: list[LTVRow]) -> Table:
        return Table(("group", "customers", "revenue", "ltv"),
                     [(row.group, row.customers, row.revenue, row.ltv) for row in rows])

    return {
        "summary": Table(("figure", "value"), [
            ("liability", view.liability), ("expiring_30", view.expiring_30),
            ("expiring_90", view.expiring_90), ("breakage", view.breakage),
            ("cost", view.cost), ("revenue", view.revenue), ("cost_share", view.cost_share),
            ("churn", view.churn), ("roi", view.roi)]),
        "liability": Table(("horizon", "points", "money"), [
            ("within_30_days", view.expiring_30_points, view.expiring_30),
            ("31_to_90_days", view.expiring_90_points - view.expiring_30_points,
             view.expiring_90 - view.expiring_30),
            ("later_or_never", later_points, later)]),
        "cost": Table(("part", "points", "money"), [
            ("redeemed", view.redeemed_points, view.redeemed_cost),
            ("rewards", view.reward_points, view.reward_cost),
            ("tier_discounts", None, view.tier_discounts)]),
        "ltv-tiers": ltv(view.ltv_tiers),
        "ltv-segments": ltv(view.ltv_segments),
    }


def money_bars(items: list[tuple[str, Decimal | None]]) -> list[MoneyBar]:
    known = [(label, value) for label, value in items if value is not None]
    largest = max((value for _, value in known), default=Decimal(0))
    return [MoneyBar(label, value, float(value / largest) if largest > 0 else 0.0)
            for label, value in known]


def csv_cell(cell: Cell) -> str:
    """A cell as text. Text starting with what a spreadsheet reads as a formula (tier names
    are free text; accounts keep tiers and segments no longer configured) gets a leading
    apostrophe, so opening the file runs nothing; numbers stay numbers, negative ones too."""
    if cell is None:
        return ""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return str(cell)


def _money(cell: Cell) -> Decimal | None:
    return cell if isinstance(cell, Decimal) else None


def _days() -> int:
    return query_int("days", minimum=1, maximum=dashboard.MAX_DAYS) or dashboard.DEFAULT_DAYS


@bp.get("/dashboard/money")
def show() -> str:
    services: Services = current_app.extensions["loyalty"]
    days = _days()
    view, now = period_view(services, days)
    t: Translator = current_app.extensions["i18n"]
    found = tables(view)
    zone = services.settings.program.zone
    segment_names = services.settings.rfm.labels

    def group_name(kind: str, group: str | None) -> str:
        if group is None:
            return t._("not scored")
        return segment_names.get(group, group) if kind == "segments" else group

    return render_template(
        "money.html", v=view, days=days, now=now, periods=PERIODS, tables=found,
        summary_names={key: name.render(t) for key, name in SUMMARY_NAMES.items()},
        horizon_names={key: name.render(t) for key, name in HORIZONS.items()},
        cost_names={key: name.render(t) for key, name in COST_PARTS.items()},
        horizon_bars=money_bars([(HORIZONS[str(key)].render(t), _money(value))
                                 for key, _points, value in found["liability"].rows]),
        cost_bars=money_bars([(COST_PARTS[str(key)].render(t), _money(value))
                              for key, _points, value in found["cost"].rows]),
        tier_bars=money_bars([(group_name("tiers", r.group), r.ltv) for r in view.ltv_tiers]),
        segment_bars=money_bars([(group_name("segments", r.group), r.ltv)
                                 for r in view.ltv_segments]),
        group_name=group_name, number=t.number, percent=t.percent,
        money=lambda value: t.money(value, view.currency),
        local=lambda moment: t.moment(moment, zone), zone=zone)


@bp.get("/dashboard/money/<name>.csv")
def table_csv(name: str) -> Response:
    if name not in TABLE_NAMES:
        abort(404)
    services: Services = current_app.extensions["loyalty"]
    days = _days()
    view, _now = period_view(services, days)
    table = tables(view)[name]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    writer.writerows(tuple(csv_cell(cell) for cell in row) for row in table.rows)
    return Response(out.getvalue(), content_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="money-{name}-{days}d.csv"'})
