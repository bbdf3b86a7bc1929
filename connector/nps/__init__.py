"""NPS: "how likely are you to recommend us", a 0-10 answer per customer.

Answers come from a CRM field (the deal / lead field `nps`), a Bitrix24 robot or automation
rule, an amoCRM pipeline action, the admin API and the CLI; each is stored once per source
event with the record it came from (`answers`), may earn a bonus at most once per period
(the ledger's idempotency key names the period), and the report counts each account's latest
answer in a period (`report`).
"""
