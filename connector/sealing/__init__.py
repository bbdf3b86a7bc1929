"""Secrets at rest: the CRM tokens kept in the database are sealed with a key kept outside it.

    sealer = Sealer(key_source(settings))   # once per process (Services.build)
    row.access_token = sealer.seal(token)   # what is stored
    token = sealer.open(row.access_token)   # what is used

`keys` says where the key comes from, `sealer` seals and opens, `rotation` re-seals every
stored token with a new key in one transaction.
"""

from connector.sealing.keys import KeySource, key_source, new_key
from connector.sealing.sealer import Sealer

__all__ = ["KeySource", "Sealer", "key_source", "new_key"]
