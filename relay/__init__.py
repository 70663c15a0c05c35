"""relay: a self-hosted SMTP relay with HTTP submission."""

__version__ = "0.1.0"
