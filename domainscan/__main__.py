"""`python -m domainscan` and the `domainscan` console script."""

from __future__ import annotations


def main() -> None:
    from domainscan.cli import run

    run()


if __name__ == "__main__":
    main()
