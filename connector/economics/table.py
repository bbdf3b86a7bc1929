"""The side-by-side table of a simulation, as the CLI and the dashboard show it."""

from __future__ import annotations

from decimal import Decimal

from connector.economics.simulate import Figures, Simulation


def _points(value: Decimal) -> str:
    return f"{value:,.2f}".replace(",", " ")


def _share(value: Decimal | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"


def _tiers(figures: Figures) -> str:
    return ", ".join(f"{name} {count}" for name, count in figures.tiers.items())


def rows(sim: Simulation) -> list[tuple[str, str, str]]:
    """(figure, current program, proposed program), in the order the README explains."""
    current, proposed = sim.current, sim.proposed
    pairs: list[tuple[str, str, str]] = [
        ("points issued", _points(current.points_issued), _points(proposed.points_issued)),
        ("taken back by returns", _points(current.points_taken_back),
         _points(proposed.points_taken_back)),
        ("bonuses", _points(current.bonuses), _points(proposed.bonuses)),
        ("expected redemptions", _points(current.expected_redemptions),
         _points(proposed.expected_redemptions)),
        ("expected breakage", _points(current.expected_breakage),
         _points(proposed.expected_breakage)),
        ("outstanding points at end", _points(current.outstanding_points),
         _points(proposed.outstanding_points)),
        ("liability at end", f"{_points(current.liability)} {current.currency}",
         f"{_points(proposed.liability)} {proposed.currency}"),
        ("cost / revenue", _share(current.cost_share), _share(proposed.cost_share)),
        ("tiers at end", _tiers(current), _tiers(proposed)),
    ]
    return pairs


def text(sim: Simulation) -> str:
    head = [f"replayed {sim.entries} entries; in the period {sim.purchases} purchases, "
            f"revenue {_points(sim.revenue)}; observed redemption rate "
            f"{_share(sim.redemption_rate)}, expiry share {_share(sim.expiry_share)}"]
    table = [("", "current", "proposed"), *rows(sim)]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in table]
    tail = [f"customers moving tier: {sim.moved_up} up, {sim.moved_down} down"]
    if sim.differing_entries:
        tail.append(f"check: {sim.differing_entries} entries replay to other points under the "
                    "current program than the ledger holds (written under other rules?)")
    return "\n".join(head + lines + tail)
