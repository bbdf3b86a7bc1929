"""Dead letters: see why a received CRM event failed, replay it after fixing the cause, or
give up on it. Records are never deleted: a dropped item stays, as skipped, for the audit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import click

from connector.cli.base import CRMS, Runtime, cli, echo_json, fail, json_option, pass_runtime
from connector.cli.output import local
from connector.i18n import Translator, translator
from connector.inbox import STATUSES, Inbox, InboxItem
from mappings.phpquery import decode

SHORT_ERROR = 60
# Event bodies carry the portal's tokens (auth[access_token], auth[application_token]): an
# admin reading why an event failed never needs them, a terminal log must not keep them.
SECRET_KEY = re.compile(r"token|secret|password", re.IGNORECASE)
SECRET_PAIR = re.compile(r"([^&=\s]*(?:token|secret|password)[^&=\s]*=)[^&\s]*", re.IGNORECASE)
HIDDEN = "***"
# A worker holds a processing item; changing it under the worker would process it twice.
RETRYABLE = ("pending", "dead", "skipped", "done")
DROPPABLE = ("pending", "dead")


@cli.group("inbox")
def inbox_group() -> None:
    """Received CRM events: why one failed, replay it, or give up on it."""


@inbox_group.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="only items in this state")
@click.option("--source", type=click.Choice(CRMS), help="only events from this CRM")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_runtime
def inbox_list(runtime: Runtime, status: str | None, source: str | None, limit: int,
               as_json: bool) -> None:
    """Items, newest first: id, source, status, attempts, received, kind, last error."""
    items = runtime.services().inbox.list(status, limit, source=source)
    if as_json:
        echo_json([summary(item) for item in items])
        return
    t = translator(runtime.settings.program.language)
    if not items:
        said = t._("no inbox items")
        if status:
            said += " " + t._("with status %(status)s", status=status)
        if source:
            said += " " + t._("from %(crm)s", crm=source)
        click.echo(said)
        return
    # Statuses, sources and kinds are the stored codes an operator filters by: not translated.
    click.echo(f"{'id':>8}  {t._('source'):<8}  {t._('status'):<10}  {t._('tries'):>5}  "
               f"{t._('received'):<16}  {t._('kind'):<20}  {t._('last error')}")
    for item in items:
        click.echo(f"{item.id:>8}  {item.source:<8}  {item.status:<10}  {item.attempts:>5}  "
                   f"{local(item.received_at, runtime.settings):<16}  {item.kind:<20}  "
                   f"{short(item.last_error)}")


@inbox_group.command("show")
@click.argument("item_id", metavar="ID", type=int)
@json_option
@pass_runtime
def inbox_show(runtime: Runtime, item_id: int, as_json: bool) -> None:
    """One item in full: its state, the whole last error and the stored body (tokens hidden)."""
    item = found(runtime.services().inbox, item_id,
                 translator(runtime.settings.program.language))
    body = readable_body(item)
    if as_json:
        echo_json({**summary(item), "last_error": item.last_error, "body": body})
        return
    settings = runtime.settings
    t = translator(settings.program.language)
    rows = [
        (t._("item"), f"{item.id}"),
        (t._("source"), item.source + (f" ({item.portal})" if item.portal else "")),
        (t._("kind"), item.kind),
        (t._("status"), item.status + ", " + t.ngettext("%(num)d attempt", "%(num)d attempts",
                                                        item.attempts)),
        (t._("received"), local(item.received_at, settings, "%Y-%m-%d %H:%M:%S")),
        (t._("next try"), local(item.next_attempt_at, settings, "%Y-%m-%d %H:%M:%S")
         if item.status == "pending" else "-"),
        (t._("dedup key"), item.dedup_key),
        (t._("content"), item.content_type or "-"),
    ]
    width = max(10, *(len(label) for label, _ in rows))
    for label, value in rows:
        click.echo(f"{label:<{width}} {value}")
    click.echo(t._("last error") + ("" if item.last_error else " -"))
    for line in (item.last_error or "").splitlines():
        click.echo(f"  {line}")
    click.echo(t._("body (tokens hidden)"))
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, indent=2)
    for line in text.splitlines():
        click.echo(f"  {line}")


@inbox_group.command("retry")
@click.argument("item_ids", metavar="ID...", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="every dead item")
@pass_runtime
def inbox_retry(runtime: Runtime, item_ids: tuple[int, ...], all_dead: bool) -> None:
    """Offer items again now, attempts reset (after fixing what made them fail)."""
    t = translator(runtime.settings.program.language)
    if bool(item_ids) == all_dead:
        raise click.UsageError(t._("give item IDs or --all-dead"))
    inbox = runtime.services().inbox
    if all_dead:
        ids = inbox.retry_dead()
        click.echo(t.ngettext("%(num)d dead item pending again: %(ids)s",
                              "%(num)d dead items pending again: %(ids)s", len(ids),
                              ids=", ".join(map(str, ids))) if ids else t._("no dead items"))
        return
    items = checked(inbox, item_ids, RETRYABLE, "retried", t)
    for item in items:
        inbox.retry(item.id)
        click.echo(t._("inbox item %(id)s: pending again (was %(status)s, %(attempts)s)",
                       id=item.id, status=item.status,
                       attempts=t.ngettext("%(num)d attempt", "%(num)d attempts",
                                           item.attempts)))


@inbox_group.command("drop")
@click.argument("item_ids", metavar="ID...", nargs=-1, type=int, required=True)
@click.option("--reason", default="no reason given", show_default=True,
              help="kept with the item")
@pass_runtime
def inbox_drop(runtime: Runtime, item_ids: tuple[int, ...], reason: str) -> None:
    """Give up on pending or dead items: they stay, as skipped, with the reason and their last
    error (`retry` still brings one back), until inbox.retention_days after the drop."""
    inbox = runtime.services().inbox
    t = translator(runtime.settings.program.language)
    for item in checked(inbox, item_ids, DROPPABLE, "dropped", t):
        inbox.drop(item.id, reason)
        click.echo(t._("inbox item %(id)s: dropped (was %(status)s)", id=item.id,
                       status=item.status))


# -- helpers -------------------------------------------------------------------------------
def found(inbox: Inbox, item_id: int, t: Translator) -> InboxItem:
    item = inbox.get(item_id)
    if item is None:
        fail(t._("inbox item %(id)s not found", id=item_id))
    return item


def checked(inbox: Inbox, item_ids: Iterable[int], allowed: tuple[str, ...],
            verb: str, t: Translator) -> list[InboxItem]:
    """Every item exists and may change, or nothing changes."""
    items = [found(inbox, item_id, t) for item_id in dict.fromkeys(item_ids)]
    for item in items:
        if item.status == "processing":
            fail(t._("inbox item %(id)s is being processed by a worker; try again when it is "
                     "done", id=item.id))
        if item.status not in allowed:
            listed = (" " + t._("or") + " ").join(allowed)
            said = t._("inbox item %(id)s is %(status)s: only %(allowed)s items can be retried",
                       id=item.id, status=item.status, allowed=listed) \
                if verb == "retried" else \
                t._("inbox item %(id)s is %(status)s: only %(allowed)s items can be dropped",
                    id=item.id, status=item.status, allowed=listed)
            fail(said)
    return items


def summary(item: InboxItem) -> dict[str, Any]:
    return {"id": item.id, "source": item.source, "kind": item.kind, "portal": item.portal,
            "status": item.status, "attempts": item.attempts,
            "received_at": item.received_at.isoformat(),
            "next_attempt_at": item.next_attempt_at.isoformat(),
            "dedup_key": item.dedup_key, "content_type": item.content_type,
            "last_error": short(item.last_error, 200) or None}


def short(error: str | None, width: int = SHORT_ERROR) -> str:
    line = (error or "").strip().split("\n", 1)[0]
    return line if len(line) <= width else line[:width - 1] + "…"


def readable_body(item: InboxItem) -> Any:
    """The stored body as data when it is JSON or a form, else as text; tokens hidden."""
    kind = (item.content_type or "").lower()
    try:
        if "json" in kind:
            return hide(json.loads(item.body))
        if "form" in kind or not kind:
            form = decode(item.body)
            if form or not item.body.strip():
                return hide(form)
    except ValueError:
        pass  # shown as text below: a body that does not parse is often why it failed
    return SECRET_PAIR.sub(rf"\1{HIDDEN}", item.body.decode("utf-8", "replace"))


def hide(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: HIDDEN if SECRET_KEY.search(str(key)) and value else hide(value)
                for key, value in data.items()}
    if isinstance(data, list):
        return [hide(value) for value in data]
    return data

