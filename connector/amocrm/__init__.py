"""amoCRM flows on top of the client: processing webhooks and pipeline actions, write-back,
marketing triggers, reconcile and install."""
