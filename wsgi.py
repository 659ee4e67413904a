"""The WSGI entry point for any server, from a checkout: ``waitress-serve wsgi:app``."""

from timeline.wsgi import app

__all__ = ["app"]
