"""The card number as a cashier scans it: a QR code (segno) and a Code 128 barcode
(python-barcode computes the modules; this only draws them), both as inline SVG."""

from __future__ import annotations

import logging
from functools import cache
from html import escape
from typing import Any

import segno

QUIET_MODULES = 10  # Code 128 wants a quiet zone of at least ten modules on each side
BAR_HEIGHT = 40


def qr_svg(text: str, title: str) -> str:
    # micro=False: a short number would otherwise become a Micro QR, which many tills and
    # phone cameras do not read.
    code = segno.make(text, error="m", micro=False)
    return code.svg_inline(scale=1, border=4, omitsize=True, svgclass="qr", lineclass=None,
                           title=title, dark="#111", light="#fff")


@cache
def _code128() -> Any:
    # python-barcode notes at import, at INFO, that Pillow (for its PNG writer) is missing;
    # only its encoder is used here, so the note would be noise in the service's log.
    note = logging.getLogger("pyBarcode")
    level = note.level
    note.setLevel(logging.WARNING)
    try:
        from barcode import Code128
    finally:
        note.setLevel(level)
    return Code128


def barcode_svg(text: str, title: str) -> str:
    modules = _code128()(text).build()[0]
    width = len(modules) + 2 * QUIET_MODULES
    bars = []
    x = 0
    while x < len(modules):
        if modules[x] == "1":
            run = len(modules[x:]) - len(modules[x:].lstrip("1"))
            bars.append(f"M{x + QUIET_MODULES} 0h{run}v{BAR_HEIGHT}h-{run}z")
            x += run
        else:
            x += 1
    return (f'<svg class="barcode" viewBox="0 0 {width} {BAR_HEIGHT}" '
            f'preserveAspectRatio="none" shape-rendering="crispEdges" role="img">'
            f'<title>{escape(title)}</title><rect width="{width}" height="{BAR_HEIGHT}" '
            f'fill="#fff"/><path fill="#111" d="{"".join(bars)}"/></svg>')
