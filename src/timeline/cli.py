"""The ``timeline`` command: a thin click layer over :class:`~timeline.service.Tracker`."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import click

from timeline import fastjson
from timeline.config import ConfigError, Settings, load_settings
from timeline.domain.dates import InvalidDate, parse_day, parse_instant
from timeline.domain.errors import TimelineError
from timeline.writelock import utcnow


class DayType(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: Any, ctx: Any) -> date:
        if isinstance(value, date):
            return value
        try:
            return parse_day(value)
        except InvalidDate as exc:
            self.fail(str(exc), param, ctx)


class InstantType(click.ParamType):
    name = "RFC3339"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_instant(value)
        except InvalidDate as exc:
            self.fail(str(exc), param, ctx)


DAY = DayType()
INSTANT = InstantType()


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _home_error(settings: Settings, exc: OSError) -> click.ClickException:
    """A store folder that cannot be made or written: say which, not a traceback."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "exists and is not a folder"
    else:
        reason = exc.strerror or str(exc)
    return click.ClickException(
        f"TIMELINE_HOME {settings.home} cannot hold the store: {exc.filename or settings.home}: "
        f"{reason}."
    )


@contextmanager
def tracker() -> Iterator[Any]:
    """The tracker for this command; user errors become one clear line, no traceback."""
    from timeline.service import Tracker

    settings = _settings()
    try:
        t = Tracker(settings)
    except TimelineError as exc:
        raise click.ClickException(exc.detail) from None
    except OSError as exc:
        raise _home_error(settings, exc) from None
    try:
        yield t
    except TimelineError as exc:
        raise click.ClickException(exc.detail) from None
    finally:
        t.close()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _echo_json_stream(fields: dict[str, Any], key: str, items: Iterable[Any]) -> None:
    """``{**fields, key: [items...]}`` as :func:`_echo_json` prints it, an item at a time."""
    head = json.dumps({**fields, key: []}, ensure_ascii=False, indent=2)
    assert head.endswith("[]\n}")
    click.echo(head[:-3], nl=False)  # up to and including the list's "["
    separator = "\n"
    for item in items:
        text = json.dumps(item, ensure_ascii=False, indent=2)
        click.echo(separator + "    " + text.replace("\n", "\n    "), nl=False)
        separator = ",\n"
    click.echo("\n  ]\n}" if separator != "\n" else "]\n}")


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:g}%"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="timeline-policy", prog_name="timeline")
def main() -> None:
    """timeline: an event-sourced tracker of trade and technology policy.

    The store lives under TIMELINE_HOME (default ./var); TIMELINE_DATABASE_URL set to a
    postgresql:// URL puts the event store on PostgreSQL.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="The port to listen on (0 picks a free one).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes (gunicorn) sharing the store; for PostgreSQL deployments.")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the web pages and the API on a production WSGI server, and deliver webhooks.

    One process runs uvicorn; --workers N runs N such processes under gunicorn. Live event
    streams are served on an event loop, so they never hold up reads and writes; past
    TIMELINE_MAX_SUBSCRIBERS streams per process (default 1000) a new one is answered 503. On
    an empty store, the bundled fixtures are loaded first. One line per request is logged to
    stderr.
    """
    import os
    import shutil
    import tempfile

    import threading

    from timeline.feed.delivery import start_delivery_worker
    from timeline.fixtures import bundled_fixtures, load_fixtures
    from timeline.web import create_app
    from timeline.web.server import configure_logging, serve as run_server, serve_workers

    configure_logging()

    def announce(url: str) -> None:
        click.echo(f"timeline serving on {url} (Ctrl-C stops)", err=True)

    with tracker() as t:
        if t.head() == 0:
            report = load_fixtures(t, bundled_fixtures())
            click.echo(f"Empty store: loaded the bundled fixtures ({report.rules_added} rule(s), "
                       f"{report.actions_added} action(s)).", err=True)
        if workers == 1:
            app = create_app(tracker=t)
            stop = threading.Event()
            delivery = start_delivery_worker(t, stop)
            try:
                run_server(app, host, port, announce=announce)
            except OSError as exc:
                raise click.ClickException(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
            finally:
                stop.set()
                delivery.join(20)
            return
    # Several processes: each one builds its own tracker after the fork, and they add up their
    # metrics in a directory of this run (before any process imports prometheus-client).
    metrics_dir = tempfile.mkdtemp(prefix="timeline-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    arbiter = os.getpid()
    try:
        serve_workers(lambda: _worker_app(), host, port, workers, announce)
    finally:
        if os.getpid() == arbiter:  # a server process leaving does not take the directory along
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _worker_app() -> Any:
    """The app of one server process, with its own tracker and webhook delivery thread."""
    import atexit
    import threading

    from timeline.feed.delivery import start_delivery_worker
    from timeline.service import Tracker
    from timeline.web import create_app

    t = Tracker(_settings())
    stop = threading.Event()
    delivery = start_delivery_worker(t, stop)

    def shutdown() -> None:
        stop.set()
        delivery.join(20)
        t.close()

    atexit.register(shutdown)
    return create_app(tracker=t)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True, path_type=Path))
def load(paths: tuple[Path, ...]) -> None:
    """Load fixture files (YAML, JSON, or CSV of rules or actions); loading twice adds nothing.

    A folder loads every fixture file in it. A bad file is named with the rule and field at
    fault (for CSV, the row and column), and nothing from the files is stored.

    \b
    CSV files hold one rule or one action a row, with columns named as the API's fields:
      rules:   id, title, jurisdiction, instrument, targets, subjects, tags, links
      actions: rule, id, kind, effective, announced, rate_percent, until, conditions,
               summary, and one source as source_title, source_url, source_publisher,
               source_published, source_quote (or sources as a JSON array)
    A file with a kind column is read as actions, else one with a title column as rules. An
    empty cell is a field not given; a list is a JSON array (["US","CN"]) or one plain value;
    rows are counted as a spreadsheet shows them (the header is row 1). Every action needs an
    id. An exported timeline or history, edited, loads back: its other columns are read past.
    A spells or panel download (rule_id with valid_from or period) loads back as its rules:
    new ones are registered, and the state columns, which follow from actions, are read past.
    """
    from timeline.fixtures import FIXTURE_SUFFIXES, load_fixtures

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in FIXTURE_SUFFIXES))
        else:
            files.append(path)
    with tracker() as t:
        report = load_fixtures(t, files)
    click.echo(
        f"Loaded {report.files} file(s): {report.rules_added} rule(s) and "
        f"{report.actions_added} action(s) added."
    )


def _state_line(state: dict) -> str:
    parts = [state["rule"]["id"], state["status"]]
    if state["rate_percent"] is not None:
        parts.append(_rate(state["rate_percent"]))
    if state["since"]:
        parts.append(f"since {state['since']}")
    if state["until"]:
        parts.append(f"until {state['until']}")
    if not state["certain"]:
        parts.append("(uncertain: " + ", ".join(state["uncertain_because"]) + ")")
    line = "  ".join(parts)
    for condition in state["conditions"]:
        line += f"\n    - {condition}"
    return line


@main.command()
@click.argument("rule", required=False)
@click.option("--as-of", type=DAY, help="The day in the world (default: today, UTC).")
@click.option("--known-at", type=INSTANT, help="What the tracker knew at this instant (default: now).")
@click.option("--jurisdiction", help="Only rules issued by this jurisdiction code.")
@click.option("--instrument", help="Only rules of this instrument.")
@click.option("-q", "--query", "q", help="Only rules matching this text.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def state(rule: str | None, as_of: date | None, known_at: datetime | None, jurisdiction: str | None,
          instrument: str | None, q: str | None, as_json: bool) -> None:
    """The state of one rule, or of every rule, on a day as known at an instant."""
    with tracker() as t:
        if rule:
            result = t.state(rule, as_of, known_at)
            if as_json:
                _echo_json(result)
            else:
                click.echo(f"as of {result['as_of']}, known at {result['known_at']}")
                click.echo(_state_line(result))
            return
        # Every rule, streamed a page at a time: the listing is never held whole.
        items = t.iter_states(as_of or utcnow().date(), t.known_at(known_at),
                              jurisdiction=jurisdiction, instrument=instrument, q=q)
        if as_json:
            _echo_json_stream({}, "items", items)
            return
        shown = 0
        for item in items:
            if not shown:
                click.echo(f"as of {item['as_of']}, known at {item['known_at']}")
            click.echo(_state_line(item))
            shown += 1
        if not shown:
            click.echo("No rules.")


@main.command()
@click.argument("rule")
@click.option("--known-at", type=INSTANT, help="What the tracker knew at this instant (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def history(rule: str, known_at: datetime | None, as_json: bool) -> None:
    """A rule's actions in effective order, with their sources, corrections and retractions."""
    with tracker() as t:
        at, items = t.history(rule, known_at)
    if as_json:
        _echo_json({"items": items, "known_at": at})
        return
    for item in items:
        mark = "RETRACTED " if item["retracted"] else ""
        rate = f" {_rate(item.get('rate_percent'))}" if item.get("rate_percent") is not None else ""
        until = f" until {item['until']}" if item.get("until") else ""
        click.echo(f"{item['effective']:<10}  {mark}{item['kind']}{rate}{until}  [{item['id']}]")
        if item.get("summary"):
            click.echo(f"    {item['summary']}")
        for condition in item.get("conditions") or []:
            click.echo(f"    condition: {condition}")
        for source in item.get("sources", []):
            click.echo(f"    source: {source['title']}" + (f" <{source['url']}>" if source.get("url") else ""))
            if source.get("quote"):
                click.echo(f"      \u201c{source['quote']}\u201d")
        for correction in item["corrections"]:
            changed = ", ".join(
                f"{k}: {json.dumps(correction['previous'].get(k))} -> {json.dumps(v)}"
                for k, v in correction["changes"].items()
            )
            click.echo(f"    corrected {correction['recorded_at']}: {changed} ({correction['reason']})")
        if item["retraction"]:
            r = item["retraction"]
            click.echo(f"    retracted {r['recorded_at']}: {r['reason']}")
    if not items:
        click.echo("No actions.")


@main.command()
@click.argument("day_from", metavar="FROM", type=DAY)
@click.argument("day_to", metavar="TO", type=DAY)
@click.option("--known-at", type=INSTANT, help="What the tracker knew at this instant (default: now).")
@click.option("--jurisdiction", help="Only rules issued by this jurisdiction code.")
@click.option("--instrument", help="Only rules of this instrument.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def diff(day_from: date, day_to: date, known_at: datetime | None, jurisdiction: str | None,
         instrument: str | None, as_json: bool) -> None:
    """The rules whose status, rate or conditions differ between two days."""
    with tracker() as t:
        at = t.known_at(known_at)
        changes = t.iter_changes(day_from, day_to, at, jurisdiction=jurisdiction,
                                 instrument=instrument)
        if as_json:
            _echo_json_stream({"from": day_from.isoformat(), "to": day_to.isoformat(),
                               "known_at": at}, "changes", changes)
            return
        shown = 0
        for change in changes:
            before, after = change["before"], change["after"]
            click.echo(
                f"{change['rule_id']}: {before['status']} {_rate(before['rate_percent'])}".rstrip()
                + f" -> {after['status']} {_rate(after['rate_percent'])}".rstrip()
            )
            shown += 1
        if not shown:
            click.echo("No changes.")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
def export(out: Path | None) -> None:
    """Every stored event as JSON Lines, in position order, with record times."""
    with tracker() as t:
        try:
            stream = open(out, "w", encoding="utf-8") if out else sys.stdout
        except OSError as exc:
            raise click.ClickException(f"{out}: cannot be written ({exc.strerror}).") from None
        try:
            for line in t.export():
                stream.write(line + "\n")
        finally:
            if out:
                stream.close()


def _read_export(path: Path) -> Iterator[dict]:
    # utf-8-sig: an export saved by an editor that adds a byte order mark still reads.
    with open(path, encoding="utf-8-sig") as stream:
        try:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = fastjson.loads(line)
                except json.JSONDecodeError as exc:
                    raise click.ClickException(
                        f"{path}: line {number} is not JSON ({exc.msg}).") from None
                if not isinstance(record, dict):
                    raise click.ClickException(f"{path}: line {number} is not a JSON object.")
                yield record
        except UnicodeDecodeError:
            raise click.ClickException(f"{path}: is not UTF-8 text, as exports are.") from None


@main.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_(file: Path) -> None:
    """Restore an export into an empty store; a new export then equals the old one."""
    with tracker() as t:
        try:
            count = t.import_records(lambda: _read_export(file))
        except TimelineError as exc:
            raise click.ClickException(f"{file}: {exc.detail}") from None
    click.echo(f"Imported {count} event(s) from {file}.")


@main.command()
def rebuild() -> None:
    """Drop every read model and rebuild it from the events, with a progress bar."""
    with tracker() as t:
        total = t.head()
        with click.progressbar(length=total, label="Rebuilding read models", file=sys.stderr) as bar:
            position = t.rebuild(progress=lambda _pos, count: bar.update(count))
    click.echo(f"Rebuilt read models up to position {position}.")


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--known-at", type=INSTANT,
              help="Publish what the tracker knew at this instant (default: now).")
@click.option("--replace", is_flag=True, help="Overwrite OUT and its metadata file if they exist.")
@click.option("--license", "license_", default="MIT", show_default=True,
              help="The licence named in the metadata file.")
@click.option("--license-url", default="https://opensource.org/license/mit", show_default=True,
              help="Where the licence's text is (an empty value names none).")
def publish(out: Path, known_at: datetime | None, replace: bool, license_: str,
            license_url: str) -> None:
    """Write a SQLite database to explore, as known at an instant, with Datasette metadata.

    OUT gets the rules, the actions as known then (with their sources, corrections and
    retraction), the links between rules and each rule's spells, with full-text search on
    rules and actions; OUT.metadata.json beside it describes every table and column. Open it
    with `datasette OUT.db -m OUT.metadata.json`, or with sqlite-utils. An existing OUT is
    left alone unless --replace is given.
    """
    from timeline.publish import metadata_path, publish as write_database

    with tracker() as t:
        at = write_database(t, out, known_at, replace=replace, license=license_,
                            license_url=license_url or None)
    click.echo(f"Published {out} and {metadata_path(out)}, as known at {at}.")


def _research_options(command: Any) -> Any:
    """The options of a research download, named as the API's parameters."""
    options = [
        click.option("--known-at", type=INSTANT,
                     help="What the tracker knew at this instant (default: now); echoed in "
                          "every row, and asking again with it gives the same rows."),
        click.option("--jurisdiction", help="Only rules issued by this jurisdiction code."),
        click.option("--instrument", help="Only rules of this instrument."),
        click.option("--rule", help="Only this rule."),
        click.option("--q", "q", help="Only rules or actions matching every word."),
        click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv",
                     show_default=True, help="CSV (lists as JSON arrays) or JSON Lines."),
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write here instead of standard output."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _write_download(rows: Iterator[dict], columns: tuple[str, ...], fmt: str,
                    out: Path | None, label: str) -> None:
    """Stream ``rows`` to ``out`` (standard output by default), with a progress bar counting
    rows when standard error is a terminal."""
    from timeline.research import chunks

    try:
        stream = open(out, "w", encoding="utf-8", newline="") if out else sys.stdout
    except OSError as exc:
        raise click.ClickException(f"{out}: cannot be written ({exc.strerror}).") from None
    try:
        if sys.stderr.isatty():
            # The number of rows is not known before the last: the bar counts them.
            with click.progressbar(rows, label=label, file=sys.stderr, show_pos=True,
                                   update_min_steps=1000) as counted:
                for chunk in chunks(counted, columns, fmt):
                    stream.write(chunk)
        else:
            for chunk in chunks(rows, columns, fmt):
                stream.write(chunk)
    finally:
        if out:
            stream.close()
        else:
            stream.flush()


@main.command()
@_research_options
def spells(known_at: datetime | None, jurisdiction: str | None, instrument: str | None,
           rule: str | None, q: str | None, fmt: str, out: Path | None) -> None:
    """Every rule's spells as known at an instant, as CSV or JSON Lines.

    One row per rule per stretch of valid time in which its state holds, ordered by rule id,
    then valid_from (valid_to is the first day after, empty while open), with the columns of
    GET /api/v1/spells.
    """
    from timeline.readmodel.research import SPELL_COLUMNS

    _check_filters(jurisdiction, instrument, rule, q)
    with tracker() as t:
        _, rows = t.spells(known_at, jurisdiction=jurisdiction, instrument=instrument,
                           rule=rule, q=q)
        _write_download(rows, SPELL_COLUMNS, fmt, out, "Spells")


@main.command()
@click.option("--from", "day_from", type=DAY, required=True, help="The first day of the first period.")
@click.option("--to", "day_to", type=DAY, required=True, help="The last day of the last period.")
@click.option("--every", type=click.Choice(["day", "week", "month", "quarter", "year"]),
              required=True, help="The periods: calendar days, ISO weeks (Monday to Sunday), "
                                  "months, quarters or years.")
@_research_options
def panel(day_from: date, day_to: date, every: str, known_at: datetime | None,
          jurisdiction: str | None, instrument: str | None, rule: str | None, q: str | None,
          fmt: str, out: Path | None) -> None:
    """A balanced rule x period panel as known at an instant, as CSV or JSON Lines.

    One row for every rule registered then and every period between --from and --to (the first
    and last cut to them), in the state of the period's last day, with changed: whether status,
    rate or conditions differ from the rule's row for the previous period. The columns of
    GET /api/v1/panel.
    """
    from timeline.readmodel.research import PANEL_COLUMNS

    _check_filters(jurisdiction, instrument, rule, q)
    with tracker() as t:
        _, rows = t.panel(day_from, day_to, every, known_at, jurisdiction=jurisdiction,
                          instrument=instrument, rule=rule, q=q)
        _write_download(rows, PANEL_COLUMNS, fmt, out, "Panel")


def _check_filters(jurisdiction: str | None, instrument: str | None, rule: str | None,
                   q: str | None) -> None:
    """The filters checked as the API checks them, each error naming its option."""
    from marshmallow import ValidationError

    from timeline.schemas import SpellsQuerySchema

    given = {"jurisdiction": jurisdiction, "instrument": instrument, "rule": rule, "q": q}
    try:
        SpellsQuerySchema().load({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        name, message = next(iter(exc.normalized_messages().items()))
        text = message[0] if isinstance(message, list) else message
        raise click.BadParameter(text, param_hint=f"'--{name}'") from None


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command(name="create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="A token that may not write (for testing clients).")
def token_create(name: str, read_only: bool) -> None:
    """Make a write token; it is printed once, as the last line, and stored only as a hash."""
    from timeline.tokens import TokenStore

    settings = _settings()
    try:
        value = TokenStore(settings).create(name, can_write=not read_only)
    except OSError as exc:
        raise _home_error(settings, exc) from None
    click.echo(f"Token {name!r} created. Keep it now: it is not shown again.", err=True)
    click.echo(value)


@main.group()
def webhooks() -> None:
    """Deliver webhooks (endpoints are managed over the API, /api/v1/webhooks)."""


@webhooks.command(name="run")
@click.option("--threads", type=click.IntRange(1, 256), default=32, show_default=True,
              help="Sender threads: tries in flight at once (a failing or silent endpoint "
                   "holds at most one).")
def webhooks_run(threads: int) -> None:
    """Deliver webhooks until interrupted (Ctrl-C).

    `timeline serve` delivers webhooks itself; run this beside it (or several of these) for
    larger deployments. Workers share the store's delivery state, so a restarted worker resumes
    where the last one stopped and no try is sent by two workers at once.
    """
    import signal
    import threading

    from timeline.feed.delivery import start_delivery_worker

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with tracker() as t:
            thread = start_delivery_worker(t, stop, threads=threads)
            click.echo("Delivering webhooks; press Ctrl-C to stop.", err=True)
            try:
                while thread.is_alive():
                    thread.join(0.5)
            except KeyboardInterrupt:
                pass
            finally:
                stop.set()
                click.echo("Stopping: finishing deliveries in flight.", err=True)
                thread.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("Stopped.", err=True)
