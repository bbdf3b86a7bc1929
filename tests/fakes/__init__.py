"""Fake CRM portals for end-to-end tests: real local HTTP servers speaking the CRMs' formats."""

from tests.fakes.bitrix24 import FakeBitrix24Portal, ManualClock, RealClock, ScaledClock
from tests.fakes.bitrix24_payloads import event_body, robot_body

__all__ = ["FakeBitrix24Portal", "ManualClock", "RealClock", "ScaledClock", "event_body",
           "robot_body"]
