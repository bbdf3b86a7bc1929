"""Erasing a customer's personal data while the books keep their amounts.

An erased account keeps its entries, lots and figures under an anonymous contact id
(`erased-<random>`), so `verify` balances and the statistics still count it; what named or
described the person (the CRM contact id, birthday, card number and link, referral code, raw
CRM records kept beside entries, received events about the contact, what was written to the
contact) is removed. `erasures` records who erased and why, with no personal data.
"""
