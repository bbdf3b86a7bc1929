"""python -m connector.i18n update | compile: keep the catalogues (README, Language)."""

from __future__ import annotations

import sys

from connector.i18n import catalog


def main(argv: list[str]) -> int:
    if argv == ["update"]:
        for line in catalog.update():
            print(line)
        return 0
    if argv == ["compile"]:
        catalog.compile_all()
        return 0
    print("usage: python -m connector.i18n update|compile", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
