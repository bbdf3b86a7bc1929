"""Sandbox CRMs: a simulated Bitrix24 portal and a simulated amoCRM account, each a real local
HTTP server speaking the CRM's documented wire formats.

What they simulate:
- Bitrix24 (`bitrix24`, `FakeBitrix24Portal`): the REST API over an inbound webhook or an OAuth
  local application (`/rest/...`, `batch`, the OAuth server), legacy `crm.deal.*` /
  `crm.contact.*` with user fields, event handlers, robots, automation triggers, card tab
  placements, users; its leaky-bucket rate limit and documented error codes; and the bodies the
  portal POSTs to the connector (events, robots: `event_body`, `robot_body`), form-encoded the
  PHP way.
- amoCRM (`amocrm`, `FakeAmoCRM`): API v4 (HAL lists, 204 for empty, problem+json errors, the
  gateway's 429/403), OAuth 2.0 with single-use refresh tokens and the consent page, custom
  fields, tags, notes, webhooks (form-encoded API v2 bodies: `webhook_body`).
- Faults (`faults`): failures, resets, slow answers, outages and seeded chaos, for the fault
  tests.

The test suite drives the connector against them end to end, and `loyalty-connector demo`
serves one on a local port, so the connector runs its real code paths without a CRM. They are
kept faithful to the real formats: each behaviour follows the CRM's documentation (Bitrix24:
bitrix24/b24restdocs, paths in the modules' comments; amoCRM: API v4 as documented), and they
refuse what the real CRM refuses, with its error codes, so the connector's CRM code is tested
against what the CRM accepts. Only the
standard library and werkzeug (installed with Flask) are used, so the sandbox works in an
installation without the test extras.
"""

from connector.sandbox.bitrix24 import FakeBitrix24Portal, ManualClock, RealClock, ScaledClock
from connector.sandbox.bitrix24_payloads import event_body, robot_body

__all__ = ["FakeBitrix24Portal", "ManualClock", "RealClock", "ScaledClock", "event_body",
           "robot_body"]
