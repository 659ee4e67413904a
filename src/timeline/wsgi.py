"""The WSGI entry point of the installed package: ``waitress-serve timeline.wsgi:app``.

Settings come from the environment (TIMELINE_HOME, TIMELINE_DATABASE_URL). Unlike
``timeline serve``, this loads no fixtures: it serves the store as it is.
"""

from timeline.web import create_app

app = create_app()
