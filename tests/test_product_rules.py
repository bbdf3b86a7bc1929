"""Product rules: what each row earns (pure), and how the ledger settles a purchase's rows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from pydantic import ValidationError

from connector.config import ProgramSettings
from connector.ledger.engine import Ledger
from connector.ledger.views import AccountRef
from connector.products.rows import Row, digest
from connector.products.rules import eligible_amount
from connector.program import Program

RULES: list[dict[str, Any]] = [
    {"name": "tobacco", "sections": ["14"], "exclude": True},
    {"name": "gift cards", "products": ["900", "901"], "exclude": True},
    {"name": "discounted", "discounted": True, "exclude": True},
    {"name": "featured brand", "property": "BRAND", "values": ["Acme"], "multiplier": "2"},
    {"name": "coffee beans", "products": ["500"], "rate": "0.10"},
]
SETTINGS = ProgramSettings.model_validate({
    "tiers": [{"name": "Bronze", "rate": "0.03"},
              {"name": "Silver", "min_spend": "30000", "rate": "0.05"}],
    "product_rules": RULES,
    "campaigns": [{"name": "double", "starts": "2026-11-27T00:00:00",
                   "ends": "2026-11-28T00:00:00", "multiplier": "2"}],
})
PROGRAM = Program(SETTINGS)
BRONZE, SILVER = SETTINGS.tiers
AT = datetime(2026, 12, 1, 12, tzinfo=UTC)

PLAIN = Row("100", D("1000"), D("2"))                     # 2000 at the tier's rate
CIGARETTES = Row("200", D("250"), D("4"), section="14")   # excluded by section
GIFT_CARD = Row("900", D("5000"), D("1"))                 # excluded by id
SALE = Row("300", D("900"), D("1"), discount=D("100"))    # already discounted
ACME = Row("400", D("1500"), D("1"), properties={"BRAND": ("Acme",)})
BEANS = Row("500", D("700"), D("1"))


def test_each_row_earns_by_the_first_rule_it_matches() -> None:
    rows = [PLAIN, CIGARETTES, GIFT_CARD, SALE, ACME, BEANS]
    earning = PROGRAM.earn(D("10600"), tier=BRONZE, at=AT, rows=rows)
    # 2000*3% + 0 + 0 + 0 + 1500*6% + 700*10% = 60 + 90 + 70
    assert earning.points == D("220")
    assert [(r["product_id"], r["rule"], r["rate"]) for r in earning.breakdown["rows"]] == [
        ("100", None, "0.03"), ("200", "tobacco", "0"), ("900", "gift cards", "0"),
        ("300", "discounted", "0"), ("400", "featured brand", "0.06"),
        ("500", "coffee beans", "0.10")]
    assert earning.breakdown["rows_digest"] == digest(rows)


def test_a_rule_matches_only_when_every_criterion_does() -> None:
    program = Program(ProgramSettings.model_validate({"product_rules": [
        {"name": "acme tobacco", "sections": ["14"], "property": "BRAND", "values": ["Acme"],
         "rate": "0.5"}]}))
    acme_tobacco = Row("1", D("100"), D("1"), section="14", properties={"BRAND": ("Acme",)})
    other_tobacco = Row("2", D("100"), D("1"), section="14", properties={"BRAND": ("Zeta",)})
    assert program.points_for_rows([acme_tobacco], D("0.03"), D(1)) == D("50")
    assert program.points_for_rows([other_tobacco], D("0.03"), D(1)) == D("3")


def test_tier_rate_and_campaign_multiplier_apply_to_the_rows() -> None:
    earning = PROGRAM.earn(D("3500"), tier=SILVER, at=datetime(2026, 11, 27, 12, tzinfo=UTC),
                           rows=[PLAIN, ACME])
    # (2000*5% + 1500*10%) * 2 campaign
    assert earning.points == D("500") and earning.campaigns == ("double",)


def test_points_are_rounded_once_on_the_sum() -> None:
    rows = [Row(str(n), D("33.30"), D("1")) for n in range(3)]  # 0.999 each at 3%
    assert PROGRAM.points_for_rows(rows, D("0.03"), D(1)) == D("2")  # floor(2.997)


def test_without_rows_the_amount_earns_at_the_tier_rate() -> None:
    assert PROGRAM.earn(D("10000"), tier=BRONZE, at=AT, rows=[]).points == D("300")
    assert "rows" not in PROGRAM.earn(D("10000"), tier=BRONZE, at=AT).breakdown


def test_redemption_cap_counts_eligible_rows_only_when_configured() -> None:
    rows = [PLAIN, GIFT_CARD]
    assert eligible_amount(SETTINGS.product_rules, rows) == D("2000.00")
    assert PROGRAM.redeem_cap(D("7000"), rows) == D("3500.00")
    eligible = Program(SETTINGS.model_copy(update={"redeem_eligible_only": True}))
    assert eligible.redeem_cap(D("7000"), rows) == D("1000.00")
    assert eligible.redeem_cap(D("7000")) == D("3500.00")  # no rows: the purchase
    preview = eligible.preview(D("7000"), tier=BRONZE, available=D("5000"), at=AT, rows=rows)
    assert (preview.points_earned, preview.max_redeem_points, preview.eligible_amount) == \
        (D("60"), D("1000.00"), D("2000.00"))


def test_digest_ignores_row_order_and_sees_changes() -> None:
    assert digest([PLAIN, ACME]) == digest([ACME, PLAIN])
    assert digest([PLAIN]) != digest([Row("100", D("1000"), D("3"))])


@pytest.mark.parametrize("rule, problem", [
    ({"name": "x", "products": ["1"]}, "exactly one of"),
    ({"name": "x", "products": ["1"], "exclude": True, "rate": "0.1"}, "exactly one of"),
    ({"name": "x", "exclude": True}, "name what it matches"),
    ({"name": "x", "property": "BRAND", "exclude": True}, "property and values"),
])
def test_a_rule_must_say_what_it_matches_and_what_it_does(rule: dict[str, Any],
                                                          problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ProgramSettings.model_validate({"product_rules": [rule]})


# -- the ledger ------------------------------------------------------------------------------
ANNA = AccountRef("bitrix24", "acme", "1")
DEAL = "bitrix24:acme:deal:42"


@pytest.fixture
def program_settings() -> dict[str, Any]:
    return {"product_rules": RULES}


def test_settle_earns_by_rows_and_resettles_when_they_change(ledger: Ledger) -> None:
    [won] = ledger.settle_purchase(ANNA, DEAL, D("7000"), rows=[PLAIN, GIFT_CARD])
    assert won.points == D("60.00")
    assert ledger.settle_purchase(ANNA, DEAL, D("7000"), rows=[GIFT_CARD, PLAIN]) == []
    # The gift card swapped for beans at the same total: the points follow the rows.
    [swapped] = ledger.settle_purchase(ANNA, DEAL, D("7000"),
                                       rows=[PLAIN, Row("500", D("5000"), D("1"))])
    assert swapped.points == D("500.00")  # 60 + 5000*10% - 60
    assert ledger.account(ANNA).balance == D("560.00")
    [fewer] = ledger.settle_purchase(ANNA, DEAL, D("2000"), rows=[PLAIN])
    assert fewer.points == D("-500.00") and ledger.account(ANNA).purchase_total == D("2000.00")
    # Rows gone: the deal's amount earns at the rate it was first accrued with.
    [amount] = ledger.settle_purchase(ANNA, DEAL, D("3000"), rows=[])
    assert amount.points == D("30.00") and ledger.account(ANNA).balance == D("90.00")
    assert ledger.settle_purchase(ANNA, DEAL, D("3000")) == []
    [lost] = ledger.settle_purchase(ANNA, DEAL, None)
    assert lost.points == D("-90.00")
    assert ledger.verify() == (1, [])


def test_rows_that_earn_nothing_still_count_as_a_purchase(ledger: Ledger) -> None:
    [won] = ledger.settle_purchase(ANNA, DEAL, D("5000"), rows=[GIFT_CARD])
    assert won.points == D("0.00")
    view = ledger.account(ANNA)
    assert (view.balance, view.purchase_count, view.purchase_total) == (0, 1, D("5000.00"))
    assert ledger.settle_purchase(ANNA, DEAL, D("5000"), rows=[GIFT_CARD]) == []


# -- the documented examples and the CRM formats ---------------------------------------------
def test_the_readme_example_rules_are_valid_and_earn_as_it_says() -> None:
    import tomllib
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("### Product rules", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    rules = tomllib.loads(example, parse_float=D)["program"]["product_rules"]
    program = Program(ProgramSettings.model_validate({"product_rules": rules}))
    rows = [Row("450", D("1200.00"), D(2)), Row("900", D("3000"), D(1), section="27"),
            Row("77", D("500"), D(1), properties={"PROPERTY_104": ("Acme",)})]
    tier = program.settings.tiers[0]
    preview = program.preview(D("5900"), tier=tier, available=D(0), at=AT, rows=rows)
    assert (preview.points_earned, preview.eligible_amount) == (D("270.00"), D("2900.00"))


def test_bitrix24_rows_are_read_as_documented() -> None:
    from mappings.bitrix24 import product_rows

    # crm.deal.productrows.get's documented answer: numbers as JSON numbers
    rows = product_rows([
        {"ID": "5", "PRODUCT_ID": 450, "PRODUCT_NAME": "Товар #2", "PRICE": 899.1,
         "QUANTITY": 1, "DISCOUNT_TYPE_ID": 2, "DISCOUNT_RATE": 10, "DISCOUNT_SUM": 99.9},
        {"ID": "4", "PRODUCT_ID": 449, "PRICE": 100, "QUANTITY": 1.5, "DISCOUNT_SUM": 0},
        {"ID": "3", "PRODUCT_ID": 0, "PRICE": "abc", "QUANTITY": 1},
    ], {"449": {"SECTION_ID": "14", "PROPERTY_104": {"valueId": "1", "value": "Acme"},
                "PROPERTY_105": [{"valueId": "2", "value": "a"}, {"valueId": "3", "value": "b"}],
                "PROPERTY_106": None}})
    assert [(r.product_id, r.amount, r.discount, r.section) for r in rows] == [
        ("450", D("899.10"), D("99.90"), None), ("449", D("150.00"), D(0), "14")]
    assert rows[1].properties == {"PROPERTY_104": ("Acme",), "PROPERTY_105": ("a", "b")}


def test_amocrm_rows_are_read_as_documented() -> None:
    from mappings.amocrm import lead_rows

    lead = {"id": 1, "_embedded": {"catalog_elements": [
        {"id": 901, "metadata": {"quantity": 2.5, "catalog_id": 5331, "price_id": 77}},
        {"id": 902, "metadata": {"quantity": 1, "catalog_id": 5331, "price_id": None}},
        {"id": 903, "metadata": {"quantity": 1, "catalog_id": 5331}},  # element unknown
    ]}}
    elements = {
        ("5331", "901"): {"id": 901, "name": "Bread", "custom_fields_values": [
            {"field_id": 77, "field_code": None, "values": [{"value": 40}]},
            {"field_id": 78, "field_code": "BRAND", "values": [{"value": "Acme"}]}]},
        ("5331", "902"): {"id": 902, "custom_fields_values": [
            {"field_id": 79, "field_code": "PRICE", "values": [{"value": "99.5"}]}]},
    }
    rows = lead_rows(lead, elements)
    assert rows is not None
    assert [(r.product_id, r.amount, r.section) for r in rows] == [
        ("901", D("100.00"), "5331"), ("902", D("99.50"), "5331")]
    assert rows[0].properties == {"77": ("40",), "BRAND": ("Acme",), "78": ("Acme",)}
    assert lead_rows({"id": 1, "_embedded": {}}, elements) is None
