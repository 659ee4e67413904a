"""Settings from the environment: the one place that reads it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import unquote, urlparse


class ConfigError(ValueError):
    """A setting that cannot be used."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None
    webhook_allow_private: bool = False
    # Live event streams one server process holds at most; past it, 503 with Retry-After.
    max_subscribers: int = 1000
    # Where the server processes of one run share their metrics (prometheus-client's
    # multiprocess mode); None in a single process.
    metrics_dir: Path | None = None

    @property
    def on_postgres(self) -> bool:
        return bool(self.database_url) and self.database_url.split(":", 1)[0] in (
            "postgresql",
            "postgres",
        )

    @property
    def sqlite_path(self) -> Path:
        """The embedded event store's file."""
        if self.database_url and not self.on_postgres:
            parsed = urlparse(self.database_url)
            if parsed.scheme != "sqlite":
                raise ConfigError(
                    f"TIMELINE_DATABASE_URL must be sqlite:///PATH or postgresql://..., "
                    f"not {self.database_url!r}"
                )
            return Path(unquote(parsed.path))
        return self.home / "events.sqlite"

    @property
    def readmodel_path(self) -> Path:
        """The read models: a local SQLite file, one per event store."""
        if self.on_postgres:
            digest = hashlib.sha256(str(self.database_url).encode()).hexdigest()[:12]
            return self.home / f"readmodel-{digest}.sqlite"
        return self.home / "readmodel.sqlite"

    @property
    def postgres_schema(self) -> str:
        """The schema named by ``?schema=`` in the URL, default ``public``."""
        for part in filter(None, urlparse(self.database_url or "").query.split("&")):
            key, _, value = part.partition("=")
            if key == "schema" and value:
                return unquote(value)
        return "public"

    def postgres_conninfo(self) -> dict[str, str]:
        """psycopg connection settings, searching the configured schema first."""
        parsed = urlparse(self.database_url)
        return {
            "dbname": unquote(parsed.path.lstrip("/")) or "postgres",
            "host": parsed.hostname or "127.0.0.1",
            "port": str(parsed.port or 5432),
            "user": unquote(parsed.username or "postgres"),
            "password": unquote(parsed.password or ""),
            "options": f"-c search_path={self.postgres_schema}",
        }

    def eventsourcing_env(self) -> dict[str, str]:
        """The eventsourcing library's settings for the chosen store."""
        if not self.on_postgres:
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "30",
                "ORIGINATOR_ID_TYPE": "text",
            }
        info = self.postgres_conninfo()
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": info["dbname"],
            "POSTGRES_HOST": info["host"],
            "POSTGRES_PORT": info["port"],
            "POSTGRES_USER": info["user"],
            "POSTGRES_PASSWORD": info["password"],
            "POSTGRES_SCHEMA": self.postgres_schema,
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_LOCK_TIMEOUT": "30",
            "ORIGINATOR_ID_TYPE": "text",
        }


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name} must be a positive whole number, not {text!r}")
    return int(text)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    home = Path(env.get("TIMELINE_HOME") or "./var").expanduser().absolute()
    settings = Settings(
        home=home,
        database_url=env.get("TIMELINE_DATABASE_URL") or None,
        webhook_allow_private=env.get("TIMELINE_WEBHOOK_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
        max_subscribers=_positive(env, "TIMELINE_MAX_SUBSCRIBERS", 1000),
        metrics_dir=Path(env["PROMETHEUS_MULTIPROC_DIR"]) if env.get("PROMETHEUS_MULTIPROC_DIR") else None,
    )
    settings.sqlite_path  # validates the URL early, with a clear message
    return settings
