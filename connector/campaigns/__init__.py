"""Campaign effect: control groups held out of campaigns, trigger mailings and A/B tests
of earning rules, and the report that compares the groups after the window."""
