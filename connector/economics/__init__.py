"""The program's economics for its owners: what it costs, what it owes, what-if replays."""
