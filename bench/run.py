"""Measure timeline next to baselines doing the same work, in one run on one machine.

    python bench/run.py --actions 1000000

For each size (10,000 actions, then ten times more, up to --actions) it generates a history
(bench/generate.py), then measures, each next to its baseline:

- bulk load (`timeline import`, read models included) vs eventsourcing's own SQLite store
  saving the same events with no read models;
- rebuild of every read model (`timeline rebuild`) vs a plain scan and decode of the
  notification log;
- one rule's state as of a day (p50, p99) vs a hand-written query on an indexed table of state
  intervals, answering the same JSON;
- every rule's state as of a day, the diff between two days, and a page of 1,000 feed events,
  each vs the same hand-written table (or a bare read of the log);
- HTTP requests per second for GET /api/v1/rules/<id>?as_of= on `timeline serve` vs a minimal
  Flask endpoint answering the same JSON from the hand-written query, on the same server;
- peak memory (RSS) of the load and the rebuild, each in its own process.

It prints a table of rates and ratios for the largest size, then how each figure changes with
size, and writes both (and the raw figures, as JSON) into --out. With --rebuild-rounds N, the
scan and the rebuild run N times in turns, and the table shows the round of the middle ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import date, timedelta
from http.client import HTTPConnection
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
# The benchmark measures the checkout it lives in, in this process and in every child.
sys.path[:0] = [str(BENCH), str(SRC)]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))

from generate import generate_file  # noqa: E402

from timeline import fastjson  # noqa: E402
from timeline.readmodel.store import END_OF_RECORD, END_OF_TIME  # noqa: E402
# Events per write, for the baselines as for the import and the rebuild.
from timeline.service import IMPORT_PAGE as PAGE  # noqa: E402


# Child processes: each one measured alone, for its time and its peak memory -----------------


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system: less sensitive than wall time to other work on the machine
    peak_rss_mib: float
    output: str


def run_child(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Run:
    """Run a process to its end; its wall time, its CPU time and peak RSS (from wait4)."""
    environment = {**os.environ, **(env or {})}
    out = open(log, "a") if log else subprocess.DEVNULL
    start = time.perf_counter()
    process = subprocess.Popen(args, env=environment, stdout=subprocess.PIPE, stderr=out, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if log:
        out.close()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}); see {log}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output)


def read_through(path: Path) -> None:
    """Read a file from start to end, leaving it in the operating system's page cache."""
    with open(path, "rb", buffering=0) as stream:
        while stream.read(1 << 20):
            pass


def child_bare_save(export: Path, store: Path) -> None:
    """Baseline: the same events into eventsourcing's SQLite store, no read models."""
    from timeline.application import PolicyApplication
    from timeline.config import Settings
    from timeline.events import from_record

    store.mkdir(parents=True, exist_ok=True)
    app = PolicyApplication(env=Settings(home=store).eventsourcing_env())
    count = 0
    with open(export, encoding="utf-8") as stream:
        # Each line read as the import reads it.
        events = (from_record(fastjson.loads(line)) for line in stream if line.strip())
        batch = []
        for event in events:
            batch.append(event)
            if len(batch) == PAGE:
                count += len(app.events.put(batch))
                batch = []
        count += len(app.events.put(batch)) if batch else 0
    app.close()
    print(count)


def child_scan(home: Path) -> None:
    """Baseline: read and decode the whole notification log, doing nothing with the events
    (decoded as the rebuild decodes them, with the application's transcoder)."""
    from timeline.application import PolicyApplication
    from timeline.config import Settings

    app = PolicyApplication(env=Settings(home=home).eventsourcing_env())
    count = 0
    for _ in app.iter_events(batch=PAGE):
        count += 1
    app.close()
    print(count)


def child_write_floor(readmodel: Path, dest: Path) -> None:
    """The storage floor of the read models: SQLite writing the same rows, with nothing to compute.

    Every row of a finished read model is written again into empty tables of the same schema,
    in one transaction, pages of the same size, in the order of
    each table's key, with the full-text indexes built at the end as a rebuild does.
    """
    from timeline.readmodel import ReadModel

    target = ReadModel(dest)
    conn = target.connection()
    for table in ("rules", "actions"):  # made again at the end, from every row
        for suffix in ("ai", "ad", "au"):
            conn.execute(f"DROP TRIGGER {table}_{suffix}")
        conn.execute(f"DROP TABLE {table}_fts")
    conn.execute("ATTACH DATABASE ? AS source", (f"file:{readmodel}?mode=ro",))
    conn.execute("BEGIN IMMEDIATE")
    rows = 0
    for table in ("rules", "rule_events", "states", "action_starts", "actions", "requests"):
        columns = [row[1] for row in conn.execute(f"PRAGMA source.table_info({table})")]
        sql = conn.execute("SELECT sql FROM source.sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        if "WITHOUT ROWID" not in sql.upper():
            columns = ["rowid", *columns]
        names = ", ".join(columns)
        insert = f"INSERT INTO main.{table} ({names}) VALUES ({', '.join('?' * len(columns))})"
        cursor = conn.execute(f"SELECT {names} FROM source.{table}")
        while page := cursor.fetchmany(PAGE):
            conn.executemany(insert, page)
            rows += len(page)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # as a build does
    conn.execute("DETACH DATABASE source")
    target.create_search()
    target.close()
    print(rows)


def child_hand_server(db: Path, port: int) -> None:
    """Baseline: a minimal Flask endpoint answering from the hand-written query, on waitress."""
    from flask import Flask, abort, request
    from waitress import serve

    local = threading.local()
    app = Flask("hand")
    app.json.sort_keys = False

    @app.get("/api/v1/rules/<rule_id>")
    def rule(rule_id: str) -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = HandTable.connect(db)
        answer = HandTable.state(conn, rule_id, request.args.get("as_of", ""), "")
        if answer is None:
            abort(404)
        return answer

    serve(app, host="127.0.0.1", port=port, threads=8, _quiet=True)


# The hand-written baseline: an indexed table of state intervals --------------------------


class HandTable:
    """What a user would hand-roll: each rule's current state intervals, indexed by rule and day."""

    SCHEMA = """
    CREATE TABLE rules (id TEXT PRIMARY KEY, title TEXT, jurisdiction TEXT, instrument TEXT,
                        targets TEXT, subjects TEXT, tags TEXT, links TEXT, version INTEGER);
    CREATE TABLE intervals (rule_id TEXT, valid_from TEXT, valid_to TEXT, status TEXT,
                            rate_percent REAL, conditions TEXT, since TEXT, until TEXT,
                            certain INTEGER, uncertain_because TEXT, based_on TEXT);
    CREATE INDEX intervals_by_rule_day ON intervals (rule_id, valid_from);
    """
    ONE = ("SELECT r.*, i.* FROM rules r JOIN intervals i ON i.rule_id = r.id "
           "WHERE r.id = ? AND i.valid_from <= ? AND i.valid_to > ? ORDER BY i.valid_from DESC LIMIT 1")
    ALL = ("SELECT r.*, i.* FROM rules r JOIN intervals i ON i.rowid = (SELECT rowid FROM intervals "
           "WHERE rule_id = r.id AND valid_from <= :day AND valid_to > :day "
           "ORDER BY valid_from DESC LIMIT 1) ORDER BY r.id")

    @staticmethod
    def build(readmodel: Path, path: Path) -> None:
        """Copy the read model's current knowledge into the hand-rolled tables."""
        if path.exists():
            path.unlink()
        conn = sqlite3.connect(path)
        conn.executescript(HandTable.SCHEMA)
        conn.execute("ATTACH DATABASE ? AS rm", (str(readmodel),))
        conn.execute(
            "INSERT INTO rules SELECT r.id, r.title, r.jurisdiction, r.instrument, r.targets, "
            "r.subjects, r.tags, r.links, (SELECT max(version) FROM rm.rule_events e "
            "WHERE e.rule_id = r.id) FROM rm.rules r")
        # Each current state with its end (the next one's start) and what it rests on, inline.
        conn.execute(
            "INSERT INTO intervals SELECT rule_id, valid_from, "
            "lead(valid_from, 1, :end) OVER (PARTITION BY rule_id ORDER BY valid_from), status, "
            "rate_percent, conditions, since, until, certain, uncertain_because, "
            "(SELECT json_group_array(action_id) FROM (SELECT action_id FROM rm.action_starts a "
            " WHERE a.rule_id = s.rule_id AND a.effective_start <= s.valid_from "
            " AND a.known_to = :now ORDER BY a.effective_start, a.ord)) "
            "FROM rm.states s WHERE known_to = :now ORDER BY rule_id, valid_from",
            {"now": END_OF_RECORD, "end": END_OF_TIME})
        conn.commit()
        conn.execute("DETACH DATABASE rm")
        conn.close()

    @staticmethod
    def connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA cache_size=-65536")  # the same page cache as the read model's
        return conn

    @staticmethod
    def answer(row: sqlite3.Row, as_of: str, known_at: str) -> dict[str, Any]:
        loads = fastjson.loads  # the JSON read as the read model's answers read it
        return {
            "rule": {"id": row["id"], "title": row["title"], "jurisdiction": row["jurisdiction"],
                     "instrument": row["instrument"], "targets": loads(row["targets"]),
                     "subjects": loads(row["subjects"]), "tags": loads(row["tags"]),
                     "links": loads(row["links"])},
            "as_of": as_of, "known_at": known_at, "status": row["status"],
            "rate_percent": row["rate_percent"], "conditions": loads(row["conditions"]),
            "since": row["since"], "until": row["until"], "certain": bool(row["certain"]),
            "uncertain_because": loads(row["uncertain_because"]),
            "based_on": loads(row["based_on"]), "version": row["version"],
        }

    @staticmethod
    def state(conn: sqlite3.Connection, rule_id: str, as_of: str, known_at: str) -> dict | None:
        row = conn.execute(HandTable.ONE, (rule_id, as_of, as_of)).fetchone()
        return None if row is None else HandTable.answer(row, as_of, known_at)

    @staticmethod
    def states(conn: sqlite3.Connection, as_of: str, known_at: str) -> list[dict]:
        return [HandTable.answer(row, as_of, known_at) for row in conn.execute(HandTable.ALL, {"day": as_of})]

    @staticmethod
    def diff(conn: sqlite3.Connection, day_from: str, day_to: str, known_at: str) -> list[dict]:
        before = {s["rule"]["id"]: s for s in HandTable.states(conn, day_from, known_at)}
        changes = []
        for state in HandTable.states(conn, day_to, known_at):
            old = before.get(state["rule"]["id"])
            if old is not None and any(old[f] != state[f] for f in ("status", "rate_percent", "conditions")):
                changes.append({"rule_id": state["rule"]["id"], "before": old, "after": state})
        return changes


# Measuring ----------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def best_of(repeats: int, call: Callable[[], Any]) -> float:
    """The fastest of a few runs: the least disturbed by whatever else the machine does."""
    return min(timed(call)[0] for _ in range(repeats))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            time.sleep(0.1)
    return False


def http_rate(port: int, paths: list[str], clients: int = 4) -> float:
    """Requests per second over keep-alive connections from a few client threads."""
    errors: list[str] = []

    def client(share: list[str]) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        for path in share:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"{path}: {response.status}")
        conn.close()

    shares = [paths[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"HTTP errors, e.g. {errors[0]}")
    return len(paths) / seconds


def start_server(args: list[str], env: dict[str, str], url: str, log: Path) -> subprocess.Popen | None:
    with open(log, "a") as out:
        process = subprocess.Popen(args, env={**os.environ, **env}, stdout=out, stderr=out)
    if wait_for(url, process):
        return process
    stop_server(process)
    return None


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_size(actions: int, out: Path, seed: int, lookups: int, http_requests: int,
                 say: Callable[[str], None], rebuild_rounds: int = 1) -> dict[str, Any]:
    """Every figure for one size of history."""
    python = sys.executable
    export = out / f"history-{actions}-s{seed}.jsonl"
    work = out / f"run-{actions}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "children.log"
    figures: dict[str, Any] = {"actions": actions}

    if not export.exists():
        say(f"generating {export.name}")
        counts = generate_file(export, actions, seed=seed)
        (export.with_suffix(".counts.json")).write_text(json.dumps(counts.__dict__))
    counts = json.loads(export.with_suffix(".counts.json").read_text()) \
        if export.with_suffix(".counts.json").exists() else None
    events = sum(1 for _ in open(export, encoding="utf-8"))
    figures["events"] = events
    figures["history"] = counts
    figures["export_mib"] = export.stat().st_size / 2**20

    say("bare eventsourcing save")
    bare = run_child([python, __file__, "--child", "save", str(export), str(work / "bare")], log=log)
    say("timeline import")
    home = work / "home"
    env = {"TIMELINE_HOME": str(home), "TIMELINE_DATABASE_URL": ""}
    load = run_child([python, "-m", "timeline", "import", str(export)], env=env, log=log)
    # The scan and the rebuild in turns, as many rounds as asked: the figures are the round of
    # the middle ratio (this machine's speed moves by a fifth from one minute to the next).
    rounds = []
    for n in range(rebuild_rounds):
        again = f" (round {n + 1} of {rebuild_rounds})" if rebuild_rounds > 1 else ""
        say("scan of the notification log" + again)
        scan = run_child([python, __file__, "--child", "scan", str(home)], log=log)
        say("timeline rebuild" + again)
        rebuild = run_child([python, "-m", "timeline", "rebuild"], env=env, log=log)
        rounds.append((scan, rebuild))
    figures["rebuild_rounds"] = [
        {"scan_s": scan.seconds, "rebuild_s": rebuild.seconds,
         "scan_cpu_s": scan.cpu_seconds, "rebuild_cpu_s": rebuild.cpu_seconds}
        for scan, rebuild in rounds]
    scan, rebuild = sorted(rounds, key=lambda pair: pair[0].seconds / pair[1].seconds)[
        (len(rounds) - 1) // 2]
    say("writing the same read-model rows again, nothing computed")
    floor = run_child([python, __file__, "--child", "write-floor", str(home / "readmodel.sqlite"),
                       str(work / "floor.sqlite")], log=log)
    figures["readmodel_rows"] = int(floor.output.strip() or 0)
    figures["write_floor_s"] = floor.seconds
    figures["scan_s"] = scan.seconds
    figures["rebuild_s"] = rebuild.seconds
    figures["load_s"] = load.seconds
    figures["bare_save_s"] = bare.seconds
    figures["cpu_s"] = {"load": load.cpu_seconds, "bare_save": bare.cpu_seconds,
                        "rebuild": rebuild.cpu_seconds, "scan": scan.cpu_seconds,
                        "write_floor": floor.cpu_seconds}
    figures.update(
        load_rate=events / load.seconds, bare_save_rate=events / bare.seconds,
        rebuild_rate=events / rebuild.seconds, scan_rate=events / scan.seconds,
        load_rss_mib=load.peak_rss_mib,
        rebuild_rss_mib=max(rebuild.peak_rss_mib for _, rebuild in rounds),
        bare_rss_mib=bare.peak_rss_mib, scan_rss_mib=max(scan.peak_rss_mib for scan, _ in rounds),
        store_mib=sum(p.stat().st_size for p in home.iterdir() if p.is_file()) / 2**20,
    )

    say("queries")
    from timeline.config import Settings
    from timeline.service import Tracker

    tracker = Tracker(Settings(home=home))
    hand_path = work / "hand.sqlite"
    HandTable.build(tracker.settings.readmodel_path, hand_path)
    hand = HandTable.connect(hand_path)
    rng = random.Random(seed)
    rule_ids = [row[0] for row in hand.execute("SELECT id FROM rules ORDER BY id")]
    day0 = date(2008, 1, 1)
    probes = [(rng.choice(rule_ids), (day0 + timedelta(days=rng.randrange(22 * 365))).isoformat())
              for _ in range(lookups)]

    # One rule as of a day, through the Tracker (what the CLI and the API call), the read-model
    # query alone, and the hand-written query, taken in turns so that both see the same machine.
    from timeline.domain.dates import parse_day
    from timeline.readmodel import queries

    # The files written last (the hand-rolled table, just built) are in the OS page cache and
    # those written earlier may not be: this machine's page cache holds a few GB, and the
    # rebuild and the storage-floor run wrote more than that since. Both files are read through
    # once, so that each path starts from the same state (its own SQLite cache empty, the
    # operating system's warm) and the lookups time the queries rather than the disk.
    for path in (tracker.settings.readmodel_path, hand_path):
        read_through(path)
    known_at = tracker.known_at()
    ours, alone, theirs = [], [], []
    mismatches = 0
    conn = tracker.readmodel.connection()
    # One pass over the probes per path, so that no path reads pages another has just read
    # (ours and the query alone share a file); each connection has the same page cache.
    answers = []
    for rule_id, day in probes:
        as_of = parse_day(day)
        seconds, answer = timed(lambda: tracker.state(rule_id, as_of))
        ours.append(seconds)
        answers.append({**answer, "known_at": known_at})
    for (rule_id, day), answer in zip(probes, answers):
        seconds, expected = timed(lambda: HandTable.state(hand, rule_id, day, known_at))
        theirs.append(seconds)
        mismatches += answer != expected
    for rule_id, day in probes:
        alone.append(timed(lambda: queries.rule_state(conn, rule_id, day, known_at))[0])
    figures.update(
        lookup_p50_us=percentile(ours, 0.5) * 1e6, lookup_p99_us=percentile(ours, 0.99) * 1e6,
        query_p50_us=percentile(alone, 0.5) * 1e6, query_p99_us=percentile(alone, 0.99) * 1e6,
        hand_p50_us=percentile(theirs, 0.5) * 1e6, hand_p99_us=percentile(theirs, 0.99) * 1e6,
        lookup_mismatches=mismatches,
    )

    day_a, day_b = "2016-06-30", "2022-06-30"
    repeats = 3
    # Whole listings, walked a keyset page at a time as the CLI's --json and the API's pages do.
    figures["all_rules_s"] = best_of(repeats, lambda: list(
        tracker.iter_states(parse_day(day_b), tracker.known_at())))
    figures["hand_all_rules_s"] = best_of(repeats, lambda: HandTable.states(hand, day_b, known_at))
    figures["diff_s"] = best_of(repeats, lambda: list(
        tracker.iter_changes(parse_day(day_a), parse_day(day_b), tracker.known_at())))
    figures["hand_diff_s"] = best_of(repeats, lambda: HandTable.diff(hand, day_a, day_b, known_at))
    figures["diff_changes"] = len(list(
        tracker.iter_changes(parse_day(day_a), parse_day(day_b), tracker.known_at())))

    # A page of 1,000 feed events from the middle of the log, in the public event shape.
    from timeline.events import to_record

    middle = max(0, tracker.app.head() // 2)
    store = sqlite3.connect(tracker.settings.sqlite_path)
    figures["feed_page_s"] = best_of(5, lambda: [to_record(e) for _, e in tracker.app.events_after(middle, 1000)])
    figures["raw_page_s"] = best_of(5, lambda: store.execute(
        "SELECT rowid, * FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT 1000", (middle,)).fetchall())
    store.close()
    tracker.close()
    hand.close()

    if http_requests:
        say("HTTP")
        figures.update(measure_http(home, hand_path, probes, http_requests, work))
    return figures


def measure_http(home: Path, hand_path: Path, probes: list[tuple[str, str]], requests: int,
                 work: Path) -> dict[str, Any]:
    paths = [f"/api/v1/rules/{rule_id}?as_of={day}" for rule_id, day in probes]
    paths = (paths * (requests // len(paths) + 1))[:requests]
    log = work / "servers.log"
    figures: dict[str, Any] = {}
    port = free_port()
    hand = start_server([sys.executable, __file__, "--child", "hand-server", str(hand_path), str(port)],
                        {}, f"http://127.0.0.1:{port}{paths[0]}", log)
    if hand is None:
        raise RuntimeError(f"the minimal Flask baseline did not start; see {log}")
    try:
        http_rate(port, paths[:200])  # warm up: connections, caches
        figures["hand_http_rps"] = http_rate(port, paths)
    finally:
        stop_server(hand)
    port = free_port()
    server = start_server([sys.executable, "-m", "timeline", "serve", "--port", str(port)],
                          {"TIMELINE_HOME": str(home), "TIMELINE_DATABASE_URL": ""},
                          f"http://127.0.0.1:{port}{paths[0]}", log)
    if server is None:
        figures["http_note"] = f"timeline serve did not answer GET /api/v1/rules/<id> (see {log})"
        return figures
    try:
        http_rate(port, paths[:200])
        figures["http_rps"] = http_rate(port, paths)
    finally:
        stop_server(server)
    return figures


# Reporting ----------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def main_table(f: dict[str, Any]) -> list[str]:
    """Rates and ratios for one size, with the targets."""
    def row(what: str, ours: str, base: str, ratio: float | None, target: str, met: bool | None) -> str:
        shown = "" if ratio is None else f"{ratio:.2f}"
        verdict = "" if met is None else ("yes" if met else "**no**")
        return f"| {what} | {ours} | {base} | {shown} | {target} | {verdict} |"

    lines = [
        f"Size: {f['actions']:,} actions, {f['events']:,} events "
        f"({f['export_mib']:.0f} MiB of export); store after load: {f['store_mib']:.0f} MiB.",
        "",
        "| measure | timeline | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    load_ratio = f["load_rate"] / f["bare_save_rate"]
    lines.append(row("bulk load, events/s (`timeline import`, read models included) vs bare eventsourcing save",
                     _rate(f["load_rate"]), _rate(f["bare_save_rate"]), load_ratio, "≥ 0.50", load_ratio >= 0.5))
    rebuild_ratio = f["rebuild_rate"] / f["scan_rate"]
    lines.append(row("rebuild, events/s (`timeline rebuild`) vs scan and decode of the log",
                     _rate(f["rebuild_rate"]), _rate(f["scan_rate"]), rebuild_ratio, "≥ 0.33", rebuild_ratio >= 1 / 3))
    if "write_floor_s" in f:
        # What SQLite alone needs for the same work: the bare save or the scan, plus writing the
        # read-model rows this history produces, with nothing computed.
        floor_load = f["events"] / (f["bare_save_s"] + f["write_floor_s"])
        lines.append(row(f"… bulk load vs bare save + writing the same {f['readmodel_rows']:,} read-model rows",
                         _rate(f["load_rate"]), _rate(floor_load), f["load_rate"] / floor_load, "", None))
        floor_rebuild = f["events"] / (f["scan_s"] + f["write_floor_s"])
        lines.append(row("… rebuild vs scan + writing the same read-model rows",
                         _rate(f["rebuild_rate"]), _rate(floor_rebuild), f["rebuild_rate"] / floor_rebuild,
                         "", None))
    if "cpu_s" in f:
        cpu = f["cpu_s"]
        lines.append(row("… bulk load vs bare save, by CPU time (s)", f"{cpu['load']:.1f}",
                         f"{cpu['bare_save']:.1f}", cpu["bare_save"] / cpu["load"], "", None))
        lines.append(row("… rebuild vs scan, by CPU time (s)", f"{cpu['rebuild']:.1f}",
                         f"{cpu['scan']:.1f}", cpu["scan"] / cpu["rebuild"], "", None))
    p50 = f["lookup_p50_us"] / f["hand_p50_us"]
    lines.append(row("one rule as of a day, p50 µs (`Tracker.state`) vs hand-written query",
                     f"{f['lookup_p50_us']:.0f}", f"{f['hand_p50_us']:.0f}", p50, "≤ 1.5", p50 <= 1.5))
    p99 = f["lookup_p99_us"] / f["hand_p99_us"]
    lines.append(row("one rule as of a day, p99 µs", f"{f['lookup_p99_us']:.0f}", f"{f['hand_p99_us']:.0f}",
                     p99, "", None))
    q50 = f["query_p50_us"] / f["hand_p50_us"]
    lines.append(row("… the read-model query alone, p50 µs (no catch-up check)", f"{f['query_p50_us']:.0f}",
                     f"{f['hand_p50_us']:.0f}", q50, "", None))
    lines.append(row("every rule as of a day, s", f"{f['all_rules_s']:.3f}", f"{f['hand_all_rules_s']:.3f}",
                     f["all_rules_s"] / f["hand_all_rules_s"], "", None))
    lines.append(row(f"diff between two days ({f['diff_changes']:,} changes), s", f"{f['diff_s']:.3f}",
                     f"{f['hand_diff_s']:.3f}", f["diff_s"] / f["hand_diff_s"], "", None))
    lines.append(row("a page of 1,000 feed events, ms (decoded, public shape) vs raw rows",
                     f"{f['feed_page_s'] * 1e3:.1f}", f"{f['raw_page_s'] * 1e3:.1f}",
                     f["feed_page_s"] / f["raw_page_s"], "", None))
    if "http_rps" in f:
        lines.append(row("HTTP GET /api/v1/rules/<id>?as_of=, requests/s vs minimal Flask endpoint",
                         _rate(f["http_rps"]), _rate(f["hand_http_rps"]), f["http_rps"] / f["hand_http_rps"],
                         "", None))
    else:
        hand = _rate(f["hand_http_rps"]) if "hand_http_rps" in f else "n/a"
        lines.append(row("HTTP GET /api/v1/rules/<id>?as_of=, requests/s", "n/a", hand, None, "", None)
                     + f" {f.get('http_note', 'not measured')}")
    lines.append(row("peak RSS of the load, MiB", f"{f['load_rss_mib']:.0f}", f"{f['bare_rss_mib']:.0f}",
                     None, "< 1024", f["load_rss_mib"] < 1024))
    lines.append(row("peak RSS of the rebuild, MiB", f"{f['rebuild_rss_mib']:.0f}", f"{f['scan_rss_mib']:.0f}",
                     None, "< 1024", f["rebuild_rss_mib"] < 1024))
    rounds = f.get("rebuild_rounds", [])
    if len(rounds) > 1:
        lines.append("")
        lines.append(f"Rebuild vs scan, {len(rounds)} rounds in turns: "
                     + ", ".join(f"{r['scan_s'] / r['rebuild_s']:.2f}" for r in rounds)
                     + " (the table shows the round of the middle ratio).")
    if f["lookup_mismatches"]:
        lines.append("")
        lines.append(f"**{f['lookup_mismatches']} lookups answered differently from the hand-written table.**")
    return lines


def scaling_table(sizes: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| actions | load ev/s | ratio | rebuild ev/s | ratio | as-of p50 µs | p99 µs | hand p50 µs "
        "| all rules s | diff s | feed page ms | HTTP req/s | load RSS MiB | rebuild RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in sizes:
        http = _rate(f["http_rps"]) if "http_rps" in f else "n/a"
        lines.append(
            f"| {f['actions']:,} | {_rate(f['load_rate'])} | {f['load_rate'] / f['bare_save_rate']:.2f} "
            f"| {_rate(f['rebuild_rate'])} | {f['rebuild_rate'] / f['scan_rate']:.2f} "
            f"| {f['lookup_p50_us']:.0f} | {f['lookup_p99_us']:.0f} | {f['hand_p50_us']:.0f} "
            f"| {f['all_rules_s']:.3f} | {f['diff_s']:.3f} | {f['feed_page_s'] * 1e3:.1f} | {http} "
            f"| {f['load_rss_mib']:.0f} | {f['rebuild_rss_mib']:.0f} |")
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        growth = last["lookup_p50_us"] / first["lookup_p50_us"]
        lines += ["", f"As-of lookup p50 at {last['actions']:,} actions is {growth:.2f}× the p50 at "
                  f"{first['actions']:,} (target ≤ 2: {'met' if growth <= 2 else '**missed**'})."]
    return lines


def sizes_for(actions: int) -> list[int]:
    sizes, size = [], 10_000
    while size < actions:
        sizes.append(size)
        size *= 10
    return sizes + [actions]


def machine() -> str:
    """What the figures were measured on, for the head of a report."""
    return (f"{platform.python_implementation()} {platform.python_version()}, SQLite "
            f"{sqlite3.sqlite_version}, {os.cpu_count()} cores, load average at start "
            f"{os.getloadavg()[0]:.2f}")


def progress(started: float) -> Callable[[str], None]:
    """A function printing a progress line on standard error, with the seconds since ``started``."""
    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {text}", file=sys.stderr, flush=True)

    return say


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, *rest = argv[1:]
        if kind == "save":
            child_bare_save(Path(rest[0]), Path(rest[1]))
        elif kind == "scan":
            child_scan(Path(rest[0]))
        elif kind == "write-floor":
            child_write_floor(Path(rest[0]), Path(rest[1]))
        elif kind == "hand-server":
            child_hand_server(Path(rest[0]), int(rest[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=1_000_000, help="largest size (default 1,000,000)")
    parser.add_argument("--sizes", help="comma-separated sizes instead of 10,000 × 10ⁿ up to --actions")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lookups", type=int, default=2000, help="single-rule lookups per size")
    parser.add_argument("--http-requests", type=int, default=3000, help="requests per server (0: skip HTTP)")
    parser.add_argument("--rebuild-rounds", type=int, default=1,
                        help="scans and rebuilds in turns per size; the middle ratio is shown")
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else sizes_for(args.actions)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say = progress(started)
    machine_text = machine()
    results = []
    for size in sizes:
        say(f"size {size:,} actions")
        results.append(measure_size(size, args.out, args.seed, args.lookups, args.http_requests, say,
                                    max(1, args.rebuild_rounds)))
    largest = results[-1]
    report = [
        f"# timeline benchmark: {largest['actions']:,} actions",
        "",
        f"Command: `python bench/run.py {' '.join(argv)}`".rstrip(),
        f"Machine: {machine_text}; load average at end {os.getloadavg()[0]:.2f}; "
        f"run took {time.perf_counter() - started:.0f} s.",
        "",
        *main_table(largest),
        "",
        "## By size",
        "",
        *scaling_table(results),
    ]
    text = "\n".join(report) + "\n"
    print(text)
    name = f"results-{largest['actions']}"
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps({"machine": machine_text, "sizes": results}, indent=2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(f"done; this process peaked at {peak:.0f} MiB; report in {args.out / (name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
