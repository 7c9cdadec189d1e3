"""domainscan: scan web domains and keep what each site says about itself, per tenant."""

from domainscan.config import __version__

__all__ = ["__version__"]
