"""The one retry policy for CRM calls: tenacity acts, the clients' classify() decides.

A retriable error that says how long to wait (Retry-After, a reset time) is honoured first;
otherwise exponential backoff with jitter, capped. A call that creates something (a note, a bot
run) is repeated only when it surely never reached the CRM: see never_sent().
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from connector.errors import RetriableCRMError

INITIAL_DELAY_S = 1.0
MAX_DELAY_S = 60.0
_backoff = wait_exponential_jitter(initial=INITIAL_DELAY_S, max=MAX_DELAY_S, jitter=1.0)


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, RetriableCRMError) and error.retry_after is not None:
        return min(max(error.retry_after, 0.0), 15 * MAX_DELAY_S)
    return _backoff(state)


def retrying(max_retries: int, *, sleep: Callable[[float], None] = time.sleep) -> Retrying:
    return Retrying(
        retry=retry_if_exception_type(RetriableCRMError),
        stop=stop_after_attempt(max_retries + 1),
        wait=_wait,
        sleep=sleep,
        reraise=True,
    )


def never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established (refused, unresolvable, connect
    timeout), so the CRM cannot have run the request. A reset or a read timeout after the
    request went out proves nothing: the CRM may have run it."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return type(reason).__name__ in {"NewConnectionError", "NameResolutionError"}
