"""The WSGI entry point for any server: ``gunicorn wsgi:app`` or ``waitress-serve wsgi:app``."""

from timeline.web import create_app

app = create_app()
