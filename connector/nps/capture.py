"""Answers read from a CRM's deal / lead field `nps`, on every event of the deal or lead.

The field keeps its value after it is read, and every later edit of the deal sends the deal
again: the answer's key is the deal and the score, so a deal holds one answer per score (a
customer asked again who answers the same on the same deal counts once; a new score on the
deal is a new answer). A value that is not 0-10 is logged and left: the deal's purchase is
settled all the same.
"""

from __future__ import annotations

import logging
from typing import Any

from connector.errors import InvalidScoreError
from connector.ledger.views import AccountRef
from connector.nps.answers import Recorded, parse_score
from connector.services import Services

log = logging.getLogger(__name__)


def from_field(services: Services, ref: AccountRef | None, value: object, *, source: str,
               entity: str, raw: dict[str, Any], actor: str) -> Recorded | None:
    """`entity`: the deal's or lead's source (bitrix24:<portal>:deal:<id>)."""
    if ref is None or value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        score = parse_score(value)
    except InvalidScoreError as exc:
        log.warning("%s: NPS field not read: %s", entity, exc.detail)
        return None
    return services.nps.record(ref, score, source=source, source_key=f"{entity}:nps:{score}",
                               raw=raw, actor=actor)
