"""`loyalty-connector demo`: the real service against a sandbox CRM, in under a minute.

The service runs as `serve` runs it (the same Flask app under waitress, the inbox worker and
the scheduler) on a temporary SQLite database, against a simulated Bitrix24 portal or amoCRM
account from connector.sandbox served on a local port. A short story is then played through
the CRM's own channels — events and webhooks the CRM posts, a robot's call — and every step
prints what the CRM now shows, read back from the simulator.

Layout: crms (the two simulated CRMs and what an admin would set up in them), story (the
steps and what they print), run (the service, the story, the wait, the clean-up).
"""
