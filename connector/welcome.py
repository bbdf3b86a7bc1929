"""The welcome bonus: once per account, for accounts made where `program.welcome_on` says
(a contact added in the CRM, an account first made by the API or the command line).

One account gets one welcome bonus whichever way it came first: a contact the API opened
and the CRM then reports as added is not welcomed again (the ledger checks under the
account's lock, whatever key each way uses).
"""

from __future__ import annotations

from typing import Literal

from connector.ledger.views import AccountRef, Result
from connector.services import Services
from connector.triggers import from_results, record

Channel = Literal["crm", "api", "cli"]


def welcome(services: Services, ref: AccountRef, *, channel: Channel, key: str,
            actor: str) -> Result | None:
    """Grant the welcome bonus if `channel` is one the program welcomes on; the welcome
    trigger fires for a bonus granted now."""
    if channel not in services.settings.program.welcome_on:
        return None
    result = services.ledger.grant_bonus(ref, "welcome", key=key, actor=actor, once=True)
    record(services.db, from_results([result]), program=services.program)
    return result


def known(services: Services, ref: AccountRef, channel: Channel) -> bool:
    """Before a request that may make the account: whether it cannot earn a welcome (the
    channel is not welcomed on, or the account is already there)."""
    return channel not in services.settings.program.welcome_on \
        or services.ledger.account_id(ref) is not None


def welcome_if_new(services: Services, ref: AccountRef, *, existed: bool,
                   channel: Channel, actor: str) -> Result | None:
    """After a request that may have made the account (`existed`: it was there before)."""
    if existed or channel not in services.settings.program.welcome_on \
            or services.ledger.account_id(ref) is None:
        return None
    return welcome(services, ref, channel=channel, key=f"welcome:{ref}", actor=actor)
