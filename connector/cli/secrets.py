"""`secrets`: the key that seals the CRM tokens stored in the database (README, Security)."""

from __future__ import annotations

import click

from connector.cli.base import Runtime, cli, pass_runtime
from connector.sealing import new_key
from connector.sealing.keys import ENV
from connector.sealing.rotation import rotate_key


@cli.group()
def secrets() -> None:
    """The key sealing stored CRM tokens: make one, rotate it."""


@secrets.command("new-key")
def secrets_new_key() -> None:
    """Print a new key (for LOYALTY_SECRET_KEY or a key file); stores nothing."""
    click.echo(new_key())


@secrets.command("rotate-key")
@pass_runtime
def secrets_rotate_key(runtime: Runtime) -> None:
    """Seal every stored token with a new key, in one transaction.

    With a key file the new key is made and written there (the previous one stays beside it
    until the next rotation). With LOYALTY_SECRET_KEY bring the new key first: NEW,OLD."""
    services = runtime.services()
    rotated = rotate_key(services.db, services.sealer)
    click.echo(f"{rotated.values} token(s) of {rotated.rows} CRM credential(s) sealed with "
               f"the new key")
    source = services.sealer.source
    if source.from_env:
        click.echo(f"now set {ENV} to the new key alone, everywhere, and restart")
    else:
        click.echo(f"the new key is in {source.path}: back it up with the database")
