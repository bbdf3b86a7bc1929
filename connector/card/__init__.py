"""The customer's own card page: links that stay unguessable and revocable (`links`,
`tokens`), what the page shows (`page`, pure), the codes a cashier scans (`codes`), the
page's words in the program's language (`texts`), and the limit on guessing (`ratelimit`).
"""
