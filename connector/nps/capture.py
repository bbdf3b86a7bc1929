"""Answers read from a CRM's deal / lead field `nps`, on every event of the deal or lead.

The field keeps its value after it is read, and every later edit of the deal sends the deal
again: a value is a new answer only when it differs from the last one read from the deal
(8, then 3, then 8 again are three answers, the latest an 8); the same value seen again is
that answer again. A customer asked again who gives the very score the field already holds
leaves no trace in the deal, so it is not a new answer: the robot, the API or the CLI
record one. A value that is not 0-10 is logged and left: the deal's purchase is
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
    return services.nps.record_field(ref, score, source=source, entity=entity, raw=raw,
                                     actor=actor)
