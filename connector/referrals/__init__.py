"""Bring a friend: referral codes, linking a newcomer to a referrer, the monthly cap on
rewards and the figures. The ledger keeps its own invariants (who is linked, paid once)."""
