"""Every error the connector raises, grouped by what the caller does about it.

    ConnectorError
     ├── ConfigError               fix the named setting and start again
     ├── LedgerError               the operation is refused; nothing was written
     │    ├── AccountNotFoundError
     │    ├── InvalidAmountError
     │    ├── InsufficientPointsError
     │    ├── RedemptionCapError
     │    ├── UnknownBonusError
     │    ├── NothingToReverseError      the source has nothing on the account (yet)
     │    ├── ReturnTooLargeError        a return exceeds what is left of its purchase
     │    ├── ReferralRefusedError       a referral that cannot stand (self, cycle, late)
 │    ├── RewardRefusedError         a reward claim refused; `reason` says why
 │    ├── RewardNotFoundError        no such reward or claim
     │    ├── UnknownCampaignError       no campaign, trigger holdout or A/B test of that name
     │    └── IdempotencyConflictError   same key, different request
     ├── StorageError              the database is not usable (unreachable, not migrated)
     │    ├── DatabaseUnavailableError  it does not answer now: give work back, retry later
     │    └── SealError            a stored secret does not open with the configured key
     └── CRMError                  a call to the CRM failed
          ├── RetriableCRMError    try again later (rate limit, 5xx, timeout); may carry a wait
          ├── CRMAuthError         credentials are invalid or revoked: stop calling, tell the admin
          ├── FatalCRMError        the request itself is wrong or refused: do not repeat it
          └── SkippableRecordError this record cannot be processed; record why and move on
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connector.i18n import Message

__all__ = [
    "AccountNotFoundError",
    "CRMAuthError",
    "CRMError",
    "ConfigError",
    "ConnectorError",
    "DatabaseUnavailableError",
    "FatalCRMError",
    "IdempotencyConflictError",
    "InsufficientPointsError",
    "InvalidAmountError",
    "LedgerError",
    "NothingToReverseError",
    "RedemptionCapError",
    "ReferralRefusedError",
    "RetriableCRMError",
    "ReturnTooLargeError",
    "RewardNotFoundError",
    "RewardRefusedError",
    "SealError",
    "SkippableRecordError",
    "StorageError",
    "UnknownBonusError",
    "UnknownCampaignError",
]


class ConnectorError(Exception):
    """Root of everything the connector raises on purpose."""


class ConfigError(ConnectorError):
    """The configuration is invalid; `problems` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StorageError(ConnectorError):
    """The database cannot be used as configured."""


class DatabaseUnavailableError(StorageError):
    """The database does not answer (down, restarting, the network between): nothing is
    wrong with the work at hand, which waits until it answers again."""


class SealError(StorageError):
    """A stored secret cannot be sealed or opened: the key is missing or not the one it was
    sealed with. The text names where the key comes from, never a key or a value."""


class LedgerError(ConnectorError):
    """A ledger operation was refused. `code` is stable and machine-readable."""

    code = "ledger_error"

    def __init__(self, detail: str, **context: object) -> None:
        self.detail = detail
        self.context = context
        super().__init__(detail)


class AccountNotFoundError(LedgerError):
    """No loyalty account for that CRM contact."""

    code = "account_not_found"


class InvalidAmountError(LedgerError):
    """An amount is zero, negative where it must be positive, or not a number."""

    code = "invalid_amount"


class InsufficientPointsError(LedgerError):
    """The account's spendable balance does not cover the request."""

    code = "insufficient_points"


class RedemptionCapError(LedgerError):
    """The request exceeds the share of the purchase that may be paid with points."""

    code = "redemption_cap_exceeded"


class UnknownBonusError(LedgerError):
    """A named bonus is not configured in `[program.bonuses]`."""

    code = "unknown_bonus"


class NothingToReverseError(LedgerError):
    """A reversal names a source with nothing recorded on the account, or already reversed."""

    code = "nothing_to_reverse"


class ReturnTooLargeError(LedgerError):
    """A return asks for more than is left of its purchase (after earlier returns)."""

    code = "return_exceeds_purchase"


class ReferralRefusedError(LedgerError):
    """A referral link that cannot stand; `reason` says why: "self", "cycle", "purchased"
    (the newcomer already bought), "linked" (already referred by someone else)."""

    code = "referral_refused"

    def __init__(self, detail: str, *, reason: str, **context: object) -> None:
        self.reason = reason
        super().__init__(detail, reason=reason, **context)


class RewardRefusedError(LedgerError):
    """A reward that cannot be claimed (or a claim that cannot change); `reason`: "points",
    "stock", "limit", "tier", "window", "disabled", or for a claim "handed", "cancelled"."""

    code = "reward_refused"

    def __init__(self, detail: str, *, reason: str, **context: object) -> None:
        self.reason = reason
        super().__init__(detail, reason=reason, **context)


class RewardNotFoundError(LedgerError):
    """No reward with that id, or no claim with that code."""

    code = "reward_not_found"


class UnknownCampaignError(LedgerError):
    """No campaign with a holdout, trigger holdout or A/B test of that name to report on."""

    code = "unknown_campaign"


class InvalidScoreError(LedgerError):
    """An NPS answer that is not a whole number from 0 to 10."""

    code = "invalid_score"


class IdempotencyConflictError(LedgerError):
    """The idempotency key was already used for a different operation, account or request."""

    code = "idempotency_conflict"


class CRMError(ConnectorError):
    """A CRM call failed. `code` is the CRM's own error code when it gave one; `body` its
    decoded answer, where the caller needs the details (amoCRM's validation-errors).
    `message`: the connector's own wording of `detail` (a marked i18n Message) where it has
    one, for what an owner reads (doctor); `detail` stays English for logs and JSON."""

    def __init__(self, detail: str, *, code: str = "", status: int | None = None,
                 body: object = None, message: Message | None = None) -> None:
        self.detail = detail
        self.code = code
        self.status = status
        self.body = body
        self.message = message
        super().__init__(detail)

    @property
    def reason(self) -> Message | str:
        """`message` when there is one, else `detail` (a CRM's or a library's words)."""
        return self.message if self.message is not None else self.detail


class RetriableCRMError(CRMError):
    """Worth repeating later; `retry_after` (seconds) when the CRM said how long to wait."""

    def __init__(self, detail: str, *, code: str = "", status: int | None = None,
                 retry_after: float | None = None, message: Message | None = None) -> None:
        super().__init__(detail, code=code, status=status, message=message)
        self.retry_after = retry_after


class CRMAuthError(CRMError):
    """The credentials are invalid, expired beyond refresh, or revoked."""


class FatalCRMError(CRMError):
    """The CRM refused the request as such; repeating it cannot help."""


class SkippableRecordError(CRMError):
    """One record cannot be processed (e.g. a deal without a contact); others go on."""
