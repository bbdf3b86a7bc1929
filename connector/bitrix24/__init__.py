"""Bitrix24 flows on top of the client: processing received events and robot calls,
write-back, automation triggers, reconcile and install."""
