"""The money view's gauges for GET /metrics: the liability and what of it expires soon, read
at scrape time (connector.metrics lists this scrape in database_scrapes)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.orm import Session

from connector.config import ProgramSettings
from connector.economics.money import (
    EXPIRY_HORIZONS,
    expiring_points,
    outstanding_points,
    to_money,
)

REFRESH = timedelta(minutes=1)


class Liability:
    """Outstanding points and their value in the program currency, and the points (and
    value) in lots expiring within 30 and 90 days. Two queries: one over the accounts, one
    over the open lots, repeated once `refresh` has passed (they scan every account and
    open lot: about 150 ms on PostgreSQL at 300,000 accounts and 1M lots, and the figures
    move slowly)."""

    __name__ = "liability"

    def __init__(self, program: ProgramSettings, *, refresh: timedelta = REFRESH) -> None:
        self.point_value = program.point_value
        self.currency = program.currency
        self.refresh = refresh
        # The last read and when (the collector's clock). Reads are serialised by the
        # collector's lock, so no lock here.
        self._read_at: datetime | None = None
        self._read: tuple[Decimal, dict[int, Decimal]] = (Decimal(0), {})

    def __call__(self, session: Session, now: datetime) -> Iterator[Metric]:
        if self._read_at is None or not timedelta(0) <= now - self._read_at < self.refresh:
            self._read = (outstanding_points(session), expiring_points(session, now))
            self._read_at = now
        owed, soon = self._read
        yield GaugeMetricFamily(
            "loyalty_points_outstanding",
            "Points on positive balances, owed to customers (overdrafts not netted)",
            value=float(owed))
        liability = GaugeMetricFamily(
            "loyalty_liability", "Outstanding points valued at program.point_value, in the "
            "program currency", labels=["currency"])
        liability.add_metric([self.currency], float(to_money(owed, self.point_value)))
        yield liability
        points = GaugeMetricFamily(
            "loyalty_points_expiring", "Points in lots that expire within the given days "
            "(past-due lots the expiry job has not taken yet included)", labels=["within_days"])
        money = GaugeMetricFamily(
            "loyalty_liability_expiring", "The value of loyalty_points_expiring in the program "
            "currency", labels=["within_days", "currency"])
        for days in EXPIRY_HORIZONS:
            points.add_metric([str(days)], float(soon[days]))
            money.add_metric([str(days), self.currency],
                             float(to_money(soon[days], self.point_value)))
        yield from (points, money)
