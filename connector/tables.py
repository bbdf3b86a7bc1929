"""Importing this registers every table on `Base.metadata` (migrations, tests, resets)."""

from connector.campaigns import models as campaign_models
from connector.card import models as card_models
from connector.codes import models as promo_models
from connector.crm import models as crm_models
from connector.inbox import InboxEvent
from connector.job_runs import JobRun
from connector.ledger import models as ledger_models
from connector.nps import models as nps_models
from connector.privacy import models as privacy_models
from connector.referrals import models as referral_models
from connector.rewards import models as reward_models
from connector.schema import Base

__all__ = ["Base", "InboxEvent", "JobRun", "campaign_models", "card_models", "crm_models",
           "ledger_models", "nps_models", "privacy_models", "promo_models", "referral_models",
           "reward_models"]
