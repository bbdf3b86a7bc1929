"""The customer's own card page: links that stay unguessable and revocable (`links`,
`tokens`), what the page shows (`page`, pure, its words from the catalogue in
connector.i18n), the codes a cashier scans (`codes`), and the limit on guessing (`ratelimit`).
"""
