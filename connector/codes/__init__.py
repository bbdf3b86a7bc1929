"""Promo codes: campaigns in `[[program.promo]]` issue a shared code or batches of unique
codes; a purchase that brings one gets what it grants, within the campaign's limits, which
the database enforces (a conditional UPDATE per use and per budget, UNIQUE keys per
purchase and per customer).

alphabet.py is the text of every code a person types, referral and reward claim codes too."""
