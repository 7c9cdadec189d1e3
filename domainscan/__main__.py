"""`python -m domainscan` and the `domainscan` console script."""

from __future__ import annotations

import sys


def main() -> None:
    # `domainscan --version` alone needs nothing but the version: answered before the command-line
    # framework is even imported (two thirds of its start-up), since cron jobs and CI smoke checks
    # ask it on every run. With any other argument, the CLI answers it as usual.
    if sys.argv[1:] == ["--version"]:
        from domainscan import VERSION_LINE

        sys.stdout.write(f"{VERSION_LINE}\n")
        return
    from domainscan.cli import run

    run()


if __name__ == "__main__":
    main()
