"""Settings: one object built at start and passed down.

Sources, strongest first: environment variables `LOYALTY_<SECTION>__<KEY>`, then the TOML file
(`--config PATH`, else `$LOYALTY_CONFIG`, else `./config.toml`), then the defaults below.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connector.bitrix24.portal import split, url_domain
from connector.errors import ConfigError
from connector.sealing.keys import parse_keys

DEFAULT_CONFIG_FILE = Path("config.toml")
CONFIG_ENV = "LOYALTY_CONFIG"
# Values of these keys are never echoed in errors: URLs can embed passwords or secrets.
SENSITIVE = ("token", "secret", "password", "url")

Share = Annotated[Decimal, Field(ge=0, le=1)]
Points = Annotated[Decimal, Field(ge=0, decimal_places=2)]
Money = Annotated[Decimal, Field(ge=0, decimal_places=2)]
# A control group larger than the treated one would mostly withhold the campaign.
HoldoutShare = Annotated[Decimal, Field(ge=0, le=Decimal("0.5"))]


def _naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        raise ValueError("give a local time without offset; program.timezone applies")
    return value


# A campaign's or a reward's window edge, read in program.timezone.
LocalTime = Annotated[datetime, AfterValidator(_naive)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = Field("http://127.0.0.1:8080", description="URL the CRM uses to reach us")
    admin_token: SecretStr | None = Field(None, description="bearer token for /api/v1")
    metrics_token: SecretStr | None = Field(
        None, description="bearer token for GET /metrics (the admin token works too)")
    # A receiver's thread mostly waits for the inbox commit, and the threads waiting together
    # share one (group commit): 16 took 15% less CPU per event than 8 under a burst.
    threads: int = Field(16, ge=1, le=256)

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("use at least 16 characters (or leave it unset to disable the API)")
        return value
    max_body_bytes: int = Field(1_048_576, ge=1024)


class DatabaseSettings(_Section):
    url: str = "sqlite:///loyalty.db"
    echo: bool = False
    pool_size: int = Field(10, ge=1)


class InboxSettings(_Section):
    poll_seconds: float = Field(2.0, gt=0, le=3600, description="how often the worker looks")
    batch_size: int = Field(50, ge=1, le=1000)
    max_attempts: int = Field(8, ge=1)
    retry_base_seconds: float = Field(5.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    lease_seconds: float = Field(
        900.0, ge=30, description="a claimed item whose worker died is offered again after this")
    wake: bool = Field(True, description="a stored event wakes the worker (false: poll only)")
    batch_wait_ms: float = Field(
        20.0, ge=0, le=1000,
        description="events stored while a pass ran: gather the burst this long into one batch")
    retention_days: int = Field(
        30, ge=0, le=36500,
        description="processed events (done, skipped) are deleted this long after; 0: kept")


class LimitsSettings(_Section):
    """Where each portal's request budget lives. Every process of a deployment (web, workers,
    scheduler, a CLI sync) must draw on the same budget, or together they pass the CRM's
    limit: "database" (a row per portal in the connector's database) or "redis" share it;
    "process" gives each process its own, right only for a single process."""

    backend: Literal["database", "redis", "process"] = "database"
    redis_url: SecretStr | None = Field(None, description="redis://host:6379/0 for 'redis'")
    redis_prefix: str = Field("loyalty:", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _redis(self) -> LimitsSettings:
        if self.backend == "redis" and self.redis_url is None:
            raise ValueError("backend 'redis' needs redis_url (redis://host:6379/0)")
        return self


class SchedulerSettings(_Section):
    enabled: bool = True
    expiry_interval_minutes: int = Field(60, ge=1)
    tiers_interval_minutes: int = Field(1440, ge=1, description="tier recalculation")
    expiry_warning_days: int = Field(14, ge=0, description="warn this long before expiry")
    catch_up_days: int = Field(
        7, ge=0, le=300, description="birthday and anniversary bonuses missed while the "
                                     "scheduler was down are granted this many days late")
    leader_poll_seconds: float = Field(
        5.0, gt=0, le=300, description="how often a standby scheduler tries to take over")


SEGMENTS = ("champions", "loyal", "new", "promising", "needs_attention", "at_risk",
            "hibernating", "lost")


class RFMSettings(_Section):
    """Recency/frequency/monetary scores and named segments, written to the segment field."""

    enabled: bool = True
    active_days: int = Field(
        365, ge=1, description="scored: bought within this many days; earlier buyers are lost")
    interval_minutes: int = Field(1440, ge=1)
    labels: dict[str, str] = Field(
        default_factory=dict, description="segment -> what the CRM field shows (default: code)")

    @field_validator("labels")
    @classmethod
    def _known(cls, labels: dict[str, str]) -> dict[str, str]:
        for name, label in labels.items():
            if name not in SEGMENTS:
                raise ValueError(f"unknown segment {name!r} (one of {', '.join(SEGMENTS)})")
            if not label.strip() or len(label) > 64:
                raise ValueError(f"{name}: the label must be 1-64 characters")
        return labels

    def label(self, segment: str | None) -> str:
        return "" if segment is None else self.labels.get(segment, segment)


def _url_secret(value: SecretStr | None) -> SecretStr | None:
    """A secret that is a URL path segment: too long to guess, nothing to escape."""
    if value is not None and (len(value.get_secret_value()) < 16
                              or not value.get_secret_value().isalnum()):
        raise ValueError("use at least 16 letters and digits")
    return value


def _default_bitrix24_fields() -> dict[str, str]:
    return {
        "balance": "UF_CRM_LOYALTY_BALANCE",
        "available": "UF_CRM_LOYALTY_AVAILABLE",
        "tier": "UF_CRM_LOYALTY_TIER",
        "discount": "UF_CRM_LOYALTY_DISCOUNT",
        "expiring_points": "UF_CRM_LOYALTY_EXPIRING",
        "expiring_date": "UF_CRM_LOYALTY_EXPIRING_DATE",
        "segment": "UF_CRM_LOYALTY_SEGMENT",
        "card": "UF_CRM_LOYALTY_CARD",
        "card_url": "UF_CRM_LOYALTY_CARD_URL",
        "referral_code": "UF_CRM_LOYALTY_REFERRAL_CODE",
        "referred_by": "UF_CRM_LOYALTY_REFERRED_BY",
        "perks": "UF_CRM_LOYALTY_PERKS",
    }


class Bitrix24Trigger(_Section):
    """A portal's own "Track incoming webhook" trigger that a transition fires
    (crm.automation.trigger): the code shown in the trigger's settings."""

    code: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$",
                      description="the trigger's code, from its settings in the portal")


def _transition_names(names: list[str]) -> None:
    # The transitions are defined with the triggers they cause; imported here, not at the
    # top, because that module depends (through the program) on this one.
    from connector.triggers import CODES

    for name in names:
        if name not in CODES:
            raise ValueError(f"unknown transition {name!r} (one of {', '.join(CODES)})")


class Bitrix24Settings(_Section):
    enabled: bool = False
    webhook_url: SecretStr | None = Field(
        None, description="inbound webhook https://PORTAL/rest/USER_ID/SECRET/ (secret!)")
    client_id: str | None = Field(None, description="OAuth app of this one portal (a local app)")
    client_secret: SecretStr | None = None
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    portal: str | None = Field(
        None, description="portal domain (acme.bitrix24.ru); from webhook_url if unset; an app "
                          "is bound to it: installs and events from another domain are refused")
    member_id: str | None = Field(None, description="checked on every event when set")
    application_token: SecretStr | None = Field(
        None, description="outgoing-webhook token; an app stores the one from ONAPPINSTALL")
    requests_per_second: float = Field(2.0, gt=0, le=100)
    burst: int = Field(50, ge=1, le=10_000)
    timeout_seconds: float = Field(30.0, gt=0)
    max_retries: int = Field(6, ge=0, le=20)
    operating_limit_seconds: float = Field(
        480.0, gt=0, description="a method's operating-time limit per 10 minutes (limits.md); "
                                 "the client waits for operating_reset_at before reaching it")
    deal_categories: list[str] = Field(default_factory=list,
                                       description="deal categories (funnels); empty: all")
    sync_interval_minutes: int = Field(15, ge=1)
    comment_when_no_deal: bool = Field(
        False, description="timeline comment on a contact whose trigger had no deal to run on")
    tab_editors: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="user ids who may change balances in the CRM tab "
                                          "(portal admins always may)")
    fields: dict[str, str] = Field(default_factory=_default_bitrix24_fields)
    promo_code_field: str = Field(
        "UF_CRM_LOYALTY_PROMO_CODE", pattern=r"^(UF_CRM_[A-Z0-9_]{1,43})?$",
        description="deal field holding a promo code, read when the deal is won; '': none")
    nps_field: str = Field(
        "UF_CRM_LOYALTY_NPS", pattern=r"^(UF_CRM_[A-Z0-9_]{1,43})?$",
        description="deal field holding a 0-10 NPS answer, read on every deal event; '': none")
    triggers: dict[str, Bitrix24Trigger] = Field(
        default_factory=dict, description="transition -> the portal trigger it fires")
    actions_secret: SecretStr | None = Field(
        None, description="secret path segment of /bitrix24/actions/<secret>/... (>= 16 chars)")

    @field_validator("triggers")
    @classmethod
    def _trigger_names(cls, triggers: dict[str, Bitrix24Trigger]
                       ) -> dict[str, Bitrix24Trigger]:
        _transition_names(list(triggers))
        return triggers

    @field_validator("actions_secret")
    @classmethod
    def _actions_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return _url_secret(value)

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, str]) -> dict[str, str]:
        for key, name in fields.items():
            if not name.startswith("UF_CRM_") or len(name) > 50 or not all(
                    c.isupper() or c.isdigit() or c == "_" for c in name):
                raise ValueError(f"{key}: {name!r} must be UF_CRM_ + A-Z, 0-9, _ (<= 50)")
        return fields

    @field_validator("portal")
    @classmethod
    def _portal(cls, portal: str | None) -> str | None:
        """Kept as its domain; an on-premise portal served over plain http keeps http://."""
        if portal is None or not portal.strip():
            return None
        found = split(portal)
        if found is None:
            raise ValueError("a domain such as acme.bitrix24.ru (no path, user or query)")
        scheme, domain = found
        return domain if scheme == "https" else f"{scheme}://{domain}"

    @model_validator(mode="after")
    def _credentials(self) -> Bitrix24Settings:
        if self.enabled and self.webhook_url is None and not (
                self.client_id and self.client_secret):
            raise ValueError("set webhook_url, or client_id and client_secret")
        if self.webhook_url is not None:
            url = self.webhook_url.get_secret_value()
            if "/rest/" not in url or "://" not in url:
                raise ValueError("webhook_url must look like https://PORTAL/rest/USER_ID/SECRET/")
        if self.enabled and not self.portal and (self.webhook_url is None or self.client_id):
            # The app trusts only this portal: its installs, its events, its REST endpoint.
            raise ValueError("portal is required with an app setup (e.g. acme.bitrix24.ru)")
        return self

    @property
    def portal_key(self) -> str:
        """How accounts and credentials name this portal: its domain."""
        if self.portal:
            return self.portal.partition("://")[2] or self.portal
        if self.webhook_url is not None:
            return url_domain(self.webhook_url.get_secret_value()) or ""
        return ""

    @property
    def rest_url(self) -> str:
        """Where an app's calls go: the configured portal's REST root, whatever a request or
        an OAuth answer names as client_endpoint."""
        scheme = "http" if self.portal and self.portal.startswith("http://") else "https"
        return f"{scheme}://{self.portal_key}/rest/"


def _default_amocrm_fields() -> dict[str, str]:
    return {
        "balance": "LOYALTY_BALANCE",
        "available": "LOYALTY_AVAILABLE",
        "tier": "LOYALTY_TIER",
        "discount": "LOYALTY_DISCOUNT",
        "expiring_points": "LOYALTY_EXPIRING",
        "expiring_date": "LOYALTY_EXPIRING_DATE",
        "segment": "LOYALTY_SEGMENT",
        "card": "LOYALTY_CARD",
        "card_url": "LOYALTY_CARD_URL",
        "referral_code": "LOYALTY_REFERRAL_CODE",
        "referred_by": "LOYALTY_REFERRED_BY",
        "perks": "LOYALTY_PERKS",
    }


class AmoCRMTrigger(_Section):
    """What a marketing transition does in amoCRM; several actions may be set together."""

    tag: str | None = Field(None, description="tag added to the contact")
    lead_tag: bool = Field(False, description="also tag the contact's latest lead")
    salesbot_id: int | None = Field(None, description="Salesbot run for the contact")
    note: bool = Field(False, description="a note on the contact")
    task: bool = Field(False, description="a task on the contact for its responsible user")


def _default_amocrm_triggers() -> dict[str, AmoCRMTrigger]:
    codes = ("loyalty_tier_up", "loyalty_tier_down", "loyalty_points_expiring",
             "loyalty_birthday", "loyalty_welcome", "loyalty_points_accrued",
             "loyalty_anniversary", "loyalty_points_available", "loyalty_referral_rewarded")
    # A claimed reward is staff's to hand over: a note and a task say which and by what code.
    return {**{code: AmoCRMTrigger(tag=code) for code in codes},
            "loyalty_reward_claimed": AmoCRMTrigger(tag="loyalty_reward_claimed", note=True,
                                                    task=True)}


class AmoCRMSettings(_Section):
    enabled: bool = False
    base_url: str | None = Field(None, description="https://SUBDOMAIN.amocrm.ru")
    subdomain: str | None = Field(
        None, description="checked against webhooks' account[subdomain]; from base_url if unset")
    long_lived_token: SecretStr | None = Field(None, description="private integration token")
    client_id: str | None = Field(None, description="OAuth integration id")
    client_secret: SecretStr | None = None
    redirect_uri: str | None = None
    webhook_secret: SecretStr | None = Field(
        None, description="secret path segment of /amocrm/webhooks/<secret> (>= 16 chars)")
    requests_per_second: float = Field(7.0, gt=0, le=50)
    burst: int = Field(7, ge=1, le=250)
    timeout_seconds: float = Field(30.0, gt=0)
    max_retries: int = Field(6, ge=0, le=20)
    write_batch: int = Field(50, ge=1, le=250, description="contacts per PATCH (max 250)")
    pipelines: list[int] = Field(default_factory=list, description="pipelines; empty: all")
    sync_interval_minutes: int = Field(15, ge=1)
    birthday_field_id: int | None = Field(
        None, ge=1, description="the contact field (type birthday or date) holding birthdays")
    fields: dict[str, str] = Field(default_factory=_default_amocrm_fields)
    promo_code_field: str = Field(
        "LOYALTY_PROMO_CODE", pattern=r"^[A-Z0-9_]{0,64}$",
        description="lead field (code) holding a promo code, read when the lead is won; '': none")
    nps_field: str = Field(
        "LOYALTY_NPS", pattern=r"^[A-Z0-9_]{0,64}$",
        description="lead field (code) holding a 0-10 NPS answer, read on every lead event; "
                    "'': none")
    triggers: dict[str, AmoCRMTrigger] = Field(
        default_factory=_default_amocrm_triggers,
        description="transition -> what it does; merged with the defaults, false turns one off")

    @field_validator("triggers", mode="before")
    @classmethod
    def _merged_triggers(cls, given: Any) -> Any:
        """A table configured for one transition replaces that transition's default only:
        the others keep theirs (a config naming one trigger must not silence the rest), and
        `name = false` turns one off."""
        if not isinstance(given, Mapping):
            return given
        _transition_names(list(given))
        merged: dict[str, Any] = dict(_default_amocrm_triggers())
        for name, value in given.items():
            if value is False:
                merged.pop(name, None)
            else:
                merged[name] = value
        return merged

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        return _url_secret(value)

    @model_validator(mode="after")
    def _credentials(self) -> AmoCRMSettings:
        if not self.enabled:
            return self
        if not self.base_url or "://" not in self.base_url:
            raise ValueError("base_url is required, e.g. https://example.amocrm.ru")
        if self.long_lived_token is None and not (self.client_id and self.client_secret
                                                  and self.redirect_uri):
            raise ValueError("set long_lived_token, or client_id, client_secret and "
                             "redirect_uri")
        if self.webhook_secret is None:
            raise ValueError("webhook_secret is required to receive webhooks")
        return self

    @property
    def portal_key(self) -> str:
        return urlsplit(self.base_url).hostname or "" if self.base_url else ""

    @property
    def account_subdomain(self) -> str:
        return self.subdomain or self.portal_key.split(".", 1)[0]


class Tier(_Section):
    name: str = Field(min_length=1)
    min_spend: Money = Decimal(0)
    rate: Share
    discount_percent: Annotated[Decimal, Field(ge=0, le=100)] = Decimal(0)
    perks: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, description="what the tier gives beyond points, as customers read "
                                          "it: card page and the CRM's perks field")


class NPSSettings(_Section):
    """The "how likely are you to recommend us" answers (connector.nps)."""

    bonus: Points = Field(Decimal(0), description="points for answering; 0: no bonus")
    period_days: int = Field(
        90, ge=1, le=3660, description="the bonus at most once per account in each window of "
                                       "this many days (counted from 1970-01-01, program time)")
    report_days: int = Field(
        90, ge=1, le=3660, description="the dashboard's NPS page: the period it counts by "
                                       "default")


class Reward(_Section):
    """A catalogue reward customers pay for with points (connector.rewards)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$",
                    description="stable slug: claims, robots and actions name the reward by it")
    name: str = Field(min_length=1, max_length=128)
    cost: Annotated[Decimal, Field(gt=0, decimal_places=2)]
    stock: int | None = Field(None, ge=0, description="how many there are; unset: no limit")
    per_customer: int | None = Field(None, ge=1, description="claims per customer; unset: any")
    tier: str | None = Field(None, description="the least tier that may claim it")
    starts: LocalTime | None = None
    ends: LocalTime | None = None

    @model_validator(mode="after")
    def _window(self) -> Reward:
        if self.starts and self.ends and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self


class Campaign(_Section):
    name: str = Field(min_length=1)
    starts: datetime
    ends: datetime
    multiplier: Annotated[Decimal, Field(ge=0, le=100)] = Decimal(1)
    extra_points: Points = Decimal(0)
    categories: list[str] = Field(default_factory=list, description="empty: every category")
    holdout: HoldoutShare = Field(
        Decimal(0), description="share of eligible customers kept out as a control group "
                                "(0.1: a deterministic 10%); 0: none")

    @field_validator("starts", "ends")
    @classmethod
    def _naive(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            raise ValueError("give a local time without offset; program.timezone applies")
        return value

    @model_validator(mode="after")
    def _window(self) -> Campaign:
        if self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self


class TriggerHoldout(_Section):
    """A control group for an automation trigger (a CRM mailing): its share of the customers
    the trigger would reach get no trigger, and the report compares their purchases in the
    `days` after the trigger's moment with the others'."""

    trigger: str = Field(description="the transition, e.g. loyalty_birthday")
    holdout: HoldoutShare = Field(gt=0)
    days: int = Field(30, ge=1, le=365, description="purchases counted this long after")
    cost_per_send: Money = Field(Decimal(0), description="what one mailing costs, if known")

    @field_validator("trigger")
    @classmethod
    def _known(cls, value: str) -> str:
        _transition_names([value])
        if value == "loyalty_reward_claimed":
            raise ValueError("a claimed reward tells staff to hand it over; it is not a "
                             "mailing to hold out")
        return value


class Variant(_Section):
    """One arm of an A/B test of the earning rules."""

    rate: Share | None = Field(None, description="base rate for every tier; unset: the tier's")
    multiplier: Annotated[Decimal, Field(gt=0, le=100)] = Field(
        Decimal(1), description="times the points (with any campaign's multiplier)")


class ABTest(_Section):
    """Two variants of the earning rules on random halves of the customers, in a window:
    group "control" earns by `a` (usually the rules as they are), "treated" by `b`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    starts: LocalTime
    ends: LocalTime
    share_b: Annotated[Decimal, Field(gt=0, lt=1)] = Field(
        Decimal("0.5"), description="share of customers on variant b")
    a: Variant = Variant()
    b: Variant

    @model_validator(mode="after")
    def _window(self) -> ABTest:
        if self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self


class ProductRule(_Section):
    """What a purchase's rows earn by product: excluded, a rate of its own, or a multiplier
    of the tier's rate. A rule matches a row when every criterion it names matches (within a
    list, any value); the first matching rule in the file applies."""

    name: str = Field(min_length=1)
    products: list[str] = Field(default_factory=list, description="product ids")
    sections: list[str] = Field(default_factory=list, description="section / category ids")
    property: str | None = Field(None, description="a product property, e.g. PROPERTY_104")
    values: list[str] = Field(default_factory=list, description="its values that match")
    discounted: bool = Field(False, description="matches rows sold at a discount")
    exclude: bool = False
    rate: Share | None = None
    multiplier: Annotated[Decimal, Field(ge=0, le=100)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ProductRule:
        effects = [self.exclude, self.rate is not None, self.multiplier is not None]
        if sum(effects) != 1:
            raise ValueError(f"rule {self.name!r}: give exactly one of exclude = true, "
                             f"rate or multiplier")
        if not (self.products or self.sections or self.property or self.discounted):
            raise ValueError(f"rule {self.name!r}: name what it matches: products, sections, "
                             f"property (with values) or discounted = true")
        if bool(self.property) != bool(self.values):
            raise ValueError(f"rule {self.name!r}: property and values go together")
        return self


class Promo(_Section):
    """A promo campaign: customers bring a code (the shared `code`, or one of the unique
    codes `codes generate` draws) to a purchase and get what it grants, within its limits."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    code: str | None = Field(None, description="a shared code anyone may give, e.g. WINTER25")
    points: Points | None = Field(None, description="fixed points per use")
    multiplier: Annotated[Decimal, Field(gt=1, le=100)] | None = Field(
        None, description="the purchase's points times this (the extra is the code's)")
    bonus: str | None = Field(None, description="a named bonus from [program.bonuses]")
    starts: LocalTime | None = None
    ends: LocalTime | None = None
    uses_per_code: int = Field(1, ge=0, description="uses of each generated code; 0: no limit")
    shared_code_uses: int = Field(0, ge=0, description="uses of the shared code; 0: no limit")
    uses_per_customer: int = Field(1, ge=0, description="per customer; 0: no limit")
    budget: Points = Field(Decimal(0), description="points all uses may grant; 0: no limit")

    @field_validator("code")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.replace("-", "").replace(" ", "").upper()
        if not 3 <= len(code) <= 32 or not code.isascii() or not code.isalnum():
            raise ValueError("3 to 32 letters and digits (dashes and spaces are ignored)")
        return code

    @model_validator(mode="after")
    def _grant(self) -> Promo:
        given = [k for k in ("points", "multiplier", "bonus") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of points, multiplier or bonus")
        if self.starts and self.ends and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self


def _default_tiers() -> list[Tier]:
    return [
        Tier(name="Bronze", min_spend=Decimal(0), rate=Decimal("0.03")),
        Tier(name="Silver", min_spend=Decimal(30000), rate=Decimal("0.05"),
             discount_percent=Decimal(3)),
        Tier(name="Gold", min_spend=Decimal(100000), rate=Decimal("0.07"),
             discount_percent=Decimal(5)),
    ]


class ProgramSettings(_Section):
    currency: str = Field("RUB", pattern=r"^[A-Z]{3}$")
    timezone: str = "Europe/Moscow"
    point_value: Annotated[Decimal, Field(gt=0)] = Field(
        Decimal(1), description="currency units one point pays for"
    )
    rounding: Literal["floor", "half_up"] = "floor"
    points_precision: int = Field(0, ge=0, le=2, description="decimal places of earned points")
    tiers: list[Tier] = Field(default_factory=_default_tiers)
    tier_period_days: int = Field(365, ge=1)
    tier_grace_days: int = Field(0, ge=0, description="no downgrade this long after a change")
    campaigns: list[Campaign] = Field(default_factory=list)
    trigger_holdouts: list[TriggerHoldout] = Field(
        default_factory=list, description="control groups for automation triggers")
    ab_test: ABTest | None = Field(None, description="an A/B test of the earning rules")
    promo: list[Promo] = Field(default_factory=list, description="promo code campaigns")
    rewards: list[Reward] = Field(default_factory=list)
    nps: NPSSettings = Field(default_factory=NPSSettings)
    welcome_bonus: Points = Decimal(0)
    welcome_on: list[Literal["crm", "api", "cli"]] = Field(
        default_factory=lambda: ["crm"],
        description="where a new account gets the welcome bonus: a contact added in the CRM, "
                    "an account first made by the API or by the command line")
    birthday_bonus: Points = Decimal(0)
    anniversary_bonus: Points = Decimal(0)
    referral_bonus: Points = Decimal(0)
    referral_newcomer_bonus: Points = Decimal(0)
    referral_monthly_cap: int = Field(
        0, ge=0, description="referral bonuses per referrer per calendar month; 0: no cap")
    referral_link: str | None = Field(
        None, description="the share link the card page offers: {code} is the customer's "
                          "referral code, e.g. https://shop.example/?ref={code}")
    bonuses: dict[str, Points] = Field(default_factory=dict)
    redeem_share: Share = Decimal("0.5")
    redeem_eligible_only: bool = Field(
        False, description="redeem_share of the rows that earn points only (product_rules)")
    product_rules: list[ProductRule] = Field(default_factory=list)
    min_balance_to_redeem: Points = Decimal(0)
    points_lifetime_days: int = Field(365, ge=0, description="0: points never expire")
    pending_days: int = Field(0, ge=0, description="days before earned points can be spent")
    negative_balance: Literal["clamp", "allow"] = "clamp"
    language: Literal["ru", "uk", "en"] = Field(
        "ru", description="what owners and customers read: card page, dashboard, CRM tab, "
                          "stats and doctor (JSON stays language-neutral)")

    @field_validator("referral_link")
    @classmethod
    def _referral_link(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith(("https://", "http://"))
                                  or "{code}" not in value):
            raise ValueError("an http(s) address with {code} where the referral code goes, "
                             "e.g. https://shop.example/?ref={code}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, tiers: list[Tier]) -> list[Tier]:
        if not tiers:
            raise ValueError("at least one tier is needed (one tier = a flat cashback rate)")
        if tiers[0].min_spend != 0:
            raise ValueError("the first tier must have min_spend = 0")
        spends = [tier.min_spend for tier in tiers]
        if spends != sorted(set(spends)):
            raise ValueError("tiers must be listed by strictly increasing min_spend")
        names = [tier.name for tier in tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        return tiers

    @model_validator(mode="after")
    def _tests(self) -> ProgramSettings:
        """Each test's name keys its groups (and draws its split): two tests of one name
        would share customers' groups."""
        names = [c.name for c in self.campaigns if c.holdout > 0]
        names += [t.trigger for t in self.trigger_holdouts]
        names += [self.ab_test.name] if self.ab_test is not None else []
        for name in names:
            if len(name) > 128:
                raise ValueError(f"campaign {name[:20]!r}...: a campaign with a holdout needs "
                                 "a name of at most 128 characters")
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"campaigns with a control group need names of their own: "
                             f"{', '.join(twice)} is used twice")
        return self

    @model_validator(mode="after")
    def _rewards(self) -> ProgramSettings:
        ids = [reward.id for reward in self.rewards]
        if len(set(ids)) != len(ids):
            raise ValueError("program.rewards: each reward needs its own id")
        names = [tier.name for tier in self.tiers]
        for reward in self.rewards:
            if reward.tier is not None and reward.tier not in names:
                raise ValueError(f"program.rewards {reward.id}: unknown tier {reward.tier!r} "
                                 f"(one of {', '.join(names)})")
        return self

    @field_validator("bonuses")
    @classmethod
    def _bonus_names(cls, bonuses: dict[str, Decimal]) -> dict[str, Decimal]:
        for name in bonuses:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"bonus name {name!r}: use letters, digits, '_' or '-'")
        return bonuses

    @model_validator(mode="after")
    def _promo(self) -> ProgramSettings:
        names = [promo.name for promo in self.promo]
        if len(set(names)) != len(names):
            raise ValueError("promo: campaign names must be unique")
        shared = [promo.code for promo in self.promo if promo.code]
        if len(set(shared)) != len(shared):
            raise ValueError("promo: a shared code may belong to one campaign only")
        builtin = ("welcome", "birthday", "anniversary", "referral", "referral_newcomer")
        for promo in self.promo:
            if promo.bonus is not None and promo.bonus not in self.bonuses \
                    and promo.bonus not in builtin:
                raise ValueError(f"promo {promo.name}: bonus {promo.bonus!r} is not in "
                                 "[program.bonuses]")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class CardSettings(_Section):
    """The customer's own page, GET /card/<token>; off while `secret` is unset."""

    secret: SecretStr | None = Field(
        None, description="key the card links are derived with (>= 32 chars); unset: no pages")
    rate_limit: str = Field(
        "30/minute;300/hour", description="requests per client address, `limits` notation")
    trusted_proxies: int = Field(
        0, ge=0, le=5, description="reverse proxies in front whose X-Forwarded-For is believed")
    history_entries: int = Field(5, ge=0, le=50, description="latest entries on the page")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("use at least 32 characters (or leave it unset: no card pages)")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _limits(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not like \"30/minute;300/hour\"") from exc
        return value

    @property
    def enabled(self) -> bool:
        return self.secret is not None


class PrivacySettings(_Section):
    erase_on_contact_delete: bool = Field(
        False, description="a contact deleted in the CRM has its personal data erased (as "
                           "`account erase`); off: its account stays as it was")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOYALTY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    inbox: InboxSettings = InboxSettings()
    limits: LimitsSettings = LimitsSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    program: ProgramSettings = ProgramSettings()
    rfm: RFMSettings = RFMSettings()
    bitrix24: Bitrix24Settings = Bitrix24Settings()
    amocrm: AmoCRMSettings = AmoCRMSettings()
    card: CardSettings = CardSettings()
    privacy: PrivacySettings = PrivacySettings()
    secret_key: SecretStr | None = Field(
        None, description="LOYALTY_SECRET_KEY: the key(s) sealing stored CRM tokens, newest "
                          "first")
    secret_key_file: str | None = Field(
        None, description="the key file when LOYALTY_SECRET_KEY is unset (default: beside a "
                          "SQLite database)")

    @field_validator("secret_key")
    @classmethod
    def _keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_keys(value.get_secret_value())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)


def resolve_config_path(explicit: str | os.PathLike[str] | None,
                        environ: Mapping[str, str] | None = None) -> Path | None:
    """--config PATH, else $LOYALTY_CONFIG, else ./config.toml if present, else None."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build the settings or raise ConfigError with one line per problem."""
    config_path = resolve_config_path(path)
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError([f"config file {config_path}: not found"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {config_path}: invalid TOML: {exc}"]) from exc
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values  # a top-level setting (secret_key)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "(config)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling against config.example.toml)"
        given = error.get("input")
        hidden = isinstance(given, dict | list) or any(word in key for word in SENSITIVE)
        shown = "" if hidden else f" (got {given!r})"
        lines.append(f"{key}: {message}{shown}")
    return lines
