"""Bringing existing customers and their balances in: from a CSV or xlsx file
(`import customers`) or from a contact field a previous tool kept in the CRM
(`import bitrix24|amocrm --balance-field CODE`).

`rows` reads the file, `matching` finds contacts by phone or e-mail in the CRM, `plan`
decides per row what would happen (or why it is refused), `writer` writes the accepted rows
in bulk under the ledger's invariants, `fields` reads balances kept in a CRM contact field.
"""
