"""domainscan: scan web domains and keep what each site says about itself, per tenant."""

# The one place the version lives: pyproject.toml reads it from here without importing the package, and
# `domainscan --version` needs no importlib.metadata lookup (tens of milliseconds on every cron run).
__version__ = "0.1.0"
VERSION_LINE = f"domainscan {__version__}"  # what `domainscan --version` prints

__all__ = ["VERSION_LINE", "__version__"]
