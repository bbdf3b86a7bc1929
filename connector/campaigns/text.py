"""The report and the list as terminal tables, in the program's language."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from connector.campaigns.figures import Interval
from connector.campaigns.groups import CONTROL, TREATED
from connector.campaigns.report import Report
from connector.i18n import DASH, N_, NBSP, Translator

KINDS = {"campaign": N_("campaign"), "trigger": N_("trigger"), "ab_test": N_("A/B test")}


def kind_name(kind: str, t: Translator) -> str:
    return KINDS[kind].render(t) if kind in KINDS else kind


def _signed(text: str, value: Decimal) -> str:
    return f"+{text}" if value > 0 else text


def percentage_points(value: Decimal | None, t: Translator) -> str:
    """A difference of two rates in percentage points ("+27.0 pp"), never in percent: 60%
    against 33% is 27 points more, which as "27%" would read as 27% of 33%."""
    if value is None:
        return DASH
    # TRANSLATORS: the unit of a difference of two percentages (percentage points).
    unit = t._("pp")
    return f"{t.number(value * 100, 1)}{NBSP}{unit}"


def interval_text(value: Interval | None, show: Any) -> str:
    """"+81.40 (-12.00 … +174.80)"; a dash when there is no interval to give."""
    if value is None:
        return DASH
    return (f"{_signed(show(value.difference), value.difference)} "
            f"({_signed(show(value.low), value.low)} … {_signed(show(value.high), value.high)})")


def format_report(result: Report, zone: ZoneInfo, t: Translator) -> list[str]:
    test = result.test
    treated, control = result.groups[TREATED], result.groups[CONTROL]

    def money(value: Decimal | None) -> str:
        return t.number(value, 2)

    def rate(value: Decimal | None) -> str:
        return t.percent(value, 1)

    if test.kind == "trigger":
        span = t._("%(days)s days after each trigger", days=t.number(test.days))
    else:
        span = " - ".join(t.moment(moment, zone) for moment in (test.starts, test.ends))
        span += f" ({zone.key})"
        if not result.finished:
            span += ", " + t._("still running: the figures are not final")
    head = [
        (t._("campaign"), f"{test.name} ({kind_name(test.kind, t)}), "
                          + t._("control group %(share)s", share=t.percent(test.control_share,
                                                                           None))),
        (t._("window"), span),
        (t._("recorded"), t._("%(treated)s treated, %(control)s in control",
                              treated=t.number(result.recorded[TREATED]),
                              control=t.number(result.recorded[CONTROL]))),
    ]
    table = [
        ("", t._("treated"), t._("control"), t._("difference (%(level)s interval)",
                                                  level=t.percent(Decimal("0.95"), 0))),
        (t._("customers"), t.number(treated.customers), t.number(control.customers), ""),
        (t._("purchase rate"), rate(treated.purchase_rate), rate(control.purchase_rate),
         interval_text(result.purchase_rate, lambda v: percentage_points(v, t))),
        (t._("average check"), money(treated.average_check), money(control.average_check),
         interval_text(result.average_check, money)),
        (t._("revenue per customer"), money(treated.revenue_per_customer),
         money(control.revenue_per_customer),
         interval_text(result.revenue_per_customer, money)),
        (t._("revenue"), money(treated.revenue), money(control.revenue), ""),
    ]
    cost = money(result.cost)
    if result.cost_points is not None:
        cost = t._("%(points)s, %(money)s", points=t.ledger_points(result.cost_points),
                   money=cost)
    tail = [
        (t._("cost"), cost),
        (t._("incremental revenue"), money(result.incremental_revenue)),
        (t._("ROI"), DASH if result.roi is None else
         f"{t.number(result.roi, 2)} ({t.percent(result.roi, 0)})"),
    ]
    width = max(len(row[0]) for row in [*head, *table, *tail]) + 2
    columns = [max(len(row[i]) for row in table) + 2 for i in (1, 2)]
    lines = [f"{label:<{width}}{value}" for label, value in head]
    lines += [f"{label:<{width}}{a:<{columns[0]}}{b:<{columns[1]}}{c}".rstrip()
              for label, a, b, c in table]
    lines += [f"{label:<{width}}{value}" for label, value in tail]
    return lines


def format_list(rows: list[dict[str, Any]], t: Translator) -> list[str]:
    if not rows:
        return [t._("no campaign with a control group: set holdout on a [[program.campaigns]] "
                    "entry, add [[program.trigger_holdouts]] or [program.ab_test]")]
    return [f"{row['name']:<24} {kind_name(row['kind'], t):<12} "
            + t._("control %(share)s: %(treated)s treated, %(control)s in control",
                  share=t.percent(Decimal(row["control_share"]), None),
                  treated=t.number(row["treated"]), control=t.number(row["control"]))
            + ("" if row["finished"] else ", " + t._("running"))
            for row in rows]
