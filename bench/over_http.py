"""Time what people open over HTTP, at two sizes, and timeline's writes and reads next to a peer.

    python bench/over_http.py                   # 10,000 and 1,000,000 actions, 500-rule write world
    python bench/over_http.py --quick           # a small run of every row, in a few seconds

Every request goes over loopback to `timeline serve` (uvicorn in front of the Flask app) from a
keep-alive client, and is timed from sending the request to reading the last byte of the answer.

Pages and lists (the first table): a 10,000-action store and a 1,000,000-action store are each
served from a copy (of --home-small / --home-large when given, else made here by
bench/generate.py and `timeline import`, or always with --make; the same generated files
bench/run.py makes, under --out). Each row is one URL, asked once to warm
up and then up to --requests times (at least three, within --row-seconds): p50, p99 and the size
of the answer at each size, and the ratio of the large to the small. "Later page" rows follow
`next_cursor` a few times and time that page. A row whose answer is not 200, or whose list has no
`next_cursor` to follow, is reported as not measured, with the reason.

Writes and reads next to a peer (the second table): a hand-written Flask + SQLite service
(`Peer`, below) doing the same work without event sourcing, served as timeline is (uvicorn,
the Flask app on timeline's number of threads), asked by the same client. Both start from empty
stores under --out (never the shared data); both are given the same rules and the same actions, with client-chosen ids, in
turns (each phase on the peer, then on timeline):

- writes across many rules: --writes actions spread over --rules rules (jurisdiction NZ), from
  four clients at once, each on its own rules;
- a long rule (jurisdiction AU): 30 writes timed while it has about 10 actions, then filled to
  --long actions, then --long-writes more timed writes (one client: one rule's writes queue);
- reads: single-rule states from four clients; the long rule's state; the world answer, the
  --rules rules of NZ at once (`/api/v1/rules?jurisdiction=NZ&limit=1000`).

After the phases, the answers of both for the long rule and a sample of the others are compared
(status, rate, conditions, since, until, based_on, version): a mismatch is reported, since the
comparison is only fair if both answer the same.

It prints a markdown table with every figure, the ratio and the target with "yes" or "**no**",
and writes it to --out/http-results.md with the raw figures in http-results.json.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from cpu_by_process import read_process  # noqa: E402
from generate import generate_file  # noqa: E402
from run import free_port, machine, percentile, progress, start_server, stop_server  # noqa: E402

MIB = 2**20


# The client ---------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float


class Client:
    """One keep-alive connection; each request timed to the last byte of its answer."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 300):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str) -> Answer:
        return self._send("GET", path, None)

    def post(self, path: str, body: dict) -> Answer:
        return self._send("POST", path, json.dumps(body).encode())

    def _send(self, method: str, path: str, body: bytes | None) -> Answer:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        start = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # a fresh connection for the next request
            raise
        return Answer(response.status, data, time.perf_counter() - start)

    def close(self) -> None:
        self.conn.close()


def summary(seconds: list[float]) -> dict[str, float]:
    return {"n": len(seconds), "p50_s": percentile(seconds, 0.5), "p99_s": percentile(seconds, 0.99)}


# Pages and lists at two sizes ---------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # "page", "api" or "later" (a later page of a list)
    path: str
    follow: int = 0  # how many times to follow next_cursor before timing


def page_rows(busiest_rule: str) -> list[Row]:
    year = "from=2020-01-01&to=2020-12-31"
    return [
        Row("`/state?as_of=2020-01-01`", "page", "/state?as_of=2020-01-01"),
        Row(f"`/diff?{year}`", "page", f"/diff?{year}"),
        Row("`/` (the timeline)", "page", "/"),
        Row("`/?q=drones`", "page", "/?q=drones"),
        Row("`/rules/<the rule with the most actions>`", "page", f"/rules/{busiest_rule}"),
        Row("`GET /api/v1/rules?as_of=2020-01-01`, first page", "api", "/api/v1/rules?as_of=2020-01-01"),
        Row(f"`GET /api/v1/diff?{year}`, first page", "api", f"/api/v1/diff?{year}"),
        Row(f"`GET /api/v1/timeline?{year}&limit=100`", "api", f"/api/v1/timeline?{year}&limit=100"),
        Row("… `/api/v1/rules`, fourth page", "later", "/api/v1/rules?as_of=2020-01-01", follow=3),
        Row("… `/api/v1/diff`, second page", "later", f"/api/v1/diff?{year}", follow=1),
        Row("… `/api/v1/timeline`, fourth page", "later", f"/api/v1/timeline?{year}&limit=100", follow=3),
    ]


def later_page(client: Client, path: str, follow: int) -> tuple[str | None, str]:
    """The URL of the page reached by following next_cursor ``follow`` times, or why not."""
    for _ in range(follow):
        answer = client.get(path)
        if answer.status != 200:
            return None, f"HTTP {answer.status}"
        cursor = json.loads(answer.body).get("next_cursor")
        if not cursor:
            return None, "no next_cursor (unpaged, or fewer pages)"
        base = re.sub(r"[?&]cursor=[^&]*", "", path)
        path = f"{base}{'&' if '?' in base else '?'}cursor={quote(str(cursor), safe='')}"
    return path, ""


def time_row(client: Client, row: Row, requests: int, budget: float) -> dict[str, Any]:
    result: dict[str, Any] = {"name": row.name, "kind": row.kind, "path": row.path}
    try:
        path = row.path
        if row.follow:
            path, why = later_page(client, row.path, row.follow)
            if path is None:
                return {**result, "error": why}
        first = client.get(path)  # warm-up
        if first.status != 200:
            return {**result, "error": f"HTTP {first.status}: {first.body[:200].decode(errors='replace')}"}
        seconds: list[float] = []
        started = time.perf_counter()
        while len(seconds) < requests and (len(seconds) < 3 or time.perf_counter() - started < budget):
            answer = client.get(path)
            if answer.status != 200:
                return {**result, "error": f"HTTP {answer.status}"}
            seconds.append(answer.seconds)
        return {**result, **summary(seconds), "bytes": len(answer.body)}
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return {**result, "error": f"{type(exc).__name__}: {exc}"}


def busiest_rule(readmodel: Path) -> tuple[str, int]:
    conn = sqlite3.connect(f"file:{readmodel}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT rule_id, count(*) FROM actions GROUP BY rule_id "
                            "ORDER BY count(*) DESC, rule_id LIMIT 1").fetchone()
    finally:
        conn.close()


def prepared_store(actions: int, given: Path | None, make: bool, out: Path, seed: int,
                   say: Callable[[str], None]) -> Path:
    """A copy of a store of ``actions`` actions that the server may write to."""
    home = out / f"http-{actions}" / "home"
    shutil.rmtree(home.parent, ignore_errors=True)
    home.parent.mkdir(parents=True)
    if given is not None and not make and (given / "events.sqlite").exists():
        say(f"copying {given}")
        shutil.copytree(given, home, ignore=shutil.ignore_patterns("*.lock"))
        return home
    # bench/run.py's layout: one generated history per size and seed, kept for later runs.
    export = out / f"history-{actions}-s{seed}.jsonl"
    if not export.exists():
        say(f"generating {export.name}")
        counts = generate_file(export, actions, seed=seed)
        export.with_suffix(".counts.json").write_text(json.dumps(counts.__dict__))
    say(f"timeline import {export.name}")
    subprocess.run([sys.executable, "-m", "timeline", "import", str(export)], check=True,
                   env={**os.environ, "TIMELINE_HOME": str(home), "TIMELINE_DATABASE_URL": ""},
                   stdout=subprocess.DEVNULL)
    return home


def serve_timeline(home: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = start_server([sys.executable, "-m", "timeline", "serve", "--port", str(port)],
                          {"TIMELINE_HOME": str(home), "TIMELINE_DATABASE_URL": ""},
                          f"http://127.0.0.1:{port}/api/v1/openapi.json", log)
    if server is None:
        raise RuntimeError(f"timeline serve did not start; see {log}")
    return server, port


def measure_pages(home: Path, args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    rule, count = busiest_rule(home / "readmodel.sqlite")
    server, port = serve_timeline(home, home.parent / "server.log")
    client = Client(port)
    rows = []
    try:
        for row in page_rows(rule):
            say(f"  {row.name}")
            rows.append(time_row(client, row, args.requests, args.row_seconds))
    finally:
        client.close()
        stop_server(server)
    return {"busiest_rule": rule, "busiest_rule_actions": count, "rows": rows}


# The peer: a hand-written Flask + SQLite service --------------------------------------------


class Peer:
    """What a competent engineer writes by hand without event sourcing: tables of rules, actions
    and each rule's current state; a write inserts the action and updates the state in one
    transaction; a read selects the rows and returns JSON.

    It answers the state as of today (reads here ask no other day). An action is applied to the
    current state when it starts on or after the newest one, and the rule's actions are folded
    again in effective order otherwise. Every date this benchmark writes is a whole day in the
    past, so answers are certain and pauses (which it does not record) never lapse on their own.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS tokens (digest TEXT PRIMARY KEY);
    CREATE TABLE IF NOT EXISTS rules (
        id TEXT PRIMARY KEY, title TEXT NOT NULL, jurisdiction TEXT NOT NULL, instrument TEXT NOT NULL,
        targets TEXT NOT NULL, subjects TEXT NOT NULL, tags TEXT NOT NULL, links TEXT NOT NULL,
        version INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS rules_by_jurisdiction ON rules (jurisdiction, id);
    CREATE TABLE IF NOT EXISTS actions (
        position INTEGER PRIMARY KEY AUTOINCREMENT, rule_id TEXT NOT NULL, id TEXT NOT NULL,
        effective_start TEXT NOT NULL, data TEXT NOT NULL, recorded_at TEXT NOT NULL,
        UNIQUE (rule_id, id));
    CREATE INDEX IF NOT EXISTS actions_by_rule ON actions (rule_id, effective_start, position);
    CREATE TABLE IF NOT EXISTS states (
        rule_id TEXT PRIMARY KEY, status TEXT NOT NULL, rate_percent REAL, conditions TEXT NOT NULL,
        since TEXT, until TEXT, before_pause TEXT, based_on TEXT NOT NULL, last_start TEXT);
    """
    KINDS = {"ban", "restrict", "ease", "fee", "pause", "resume", "lift", "propose"}
    ACTION_FIELDS = {"id", "kind", "effective", "announced", "rate_percent", "until", "conditions",
                     "summary", "sources"}
    RULE_FIELDS = {"id", "title", "jurisdiction", "instrument", "targets", "subjects", "tags", "links"}
    DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
    EMPTY = {"status": "none", "rate_percent": None, "conditions": [], "since": None, "until": None,
             "before_pause": None}

    @staticmethod
    def create(path: Path, token: str) -> None:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(Peer.SCHEMA)
        conn.execute("INSERT OR IGNORE INTO tokens VALUES (?)", (hashlib.sha256(token.encode()).hexdigest(),))
        conn.commit()
        conn.close()

    @staticmethod
    def apply(state: dict, action: dict) -> dict:
        """The contract's effect of one action on a rule's state."""
        kind, day = action["kind"], action["effective"]
        state = dict(state)
        if kind in ("ban", "restrict", "ease"):
            if state["status"] == "paused":  # ends the pause: what it held back comes back first
                state.update(state["before_pause"])
            state.update(status={"ban": "banned", "restrict": "restricted", "ease": "eased"}[kind],
                         since=day, until=None, before_pause=None)
        elif kind == "fee":
            state["rate_percent"] = action["rate_percent"] or None
            if state["status"] in ("none", "proposed", "lifted"):
                state.update(status="in_force", since=day)
        elif kind == "pause":
            if state["status"] != "paused":
                state["before_pause"] = {k: state[k] for k in ("status", "rate_percent", "conditions", "since")}
            state.update(status="paused", rate_percent=None, conditions=[], since=day,
                         until=action.get("until"))
        elif kind == "resume":
            if state["status"] == "paused":
                state.update(state["before_pause"], since=day, until=None, before_pause=None)
        elif kind == "lift":
            state.update(status="lifted", rate_percent=None, conditions=[], since=day, until=None,
                         before_pause=None)
        elif kind == "propose" and state["status"] in ("none", "lifted"):
            state.update(status="proposed", since=day)
        if "conditions" in action and kind not in ("lift", "resume", "pause"):
            state["conditions"] = action["conditions"]
        return state

    @staticmethod
    def serve(db: Path, port: int) -> None:
        import uvicorn
        from a2wsgi import WSGIMiddleware
        from flask import Flask, request

        from timeline.web.server import THREADS

        local = threading.local()
        app = Flask("peer")
        app.json.sort_keys = False

        def conn() -> sqlite3.Connection:
            if getattr(local, "conn", None) is None:
                local.conn = sqlite3.connect(db, isolation_level=None, timeout=30)
                local.conn.row_factory = sqlite3.Row
            return local.conn

        def now() -> str:
            return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        def problem(status: int, detail: str, errors: dict | None = None) -> Any:
            body = {"type": "about:blank", "title": detail, "status": status, "detail": detail,
                    "errors": errors or {}}
            return app.response_class(json.dumps(body), status, mimetype="application/problem+json")

        def may_write() -> bool:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return False
            digest = hashlib.sha256(header[7:].encode()).hexdigest()
            return conn().execute("SELECT 1 FROM tokens WHERE digest = ?", (digest,)).fetchone() is not None

        def answer(row: sqlite3.Row, as_of: str, known_at: str) -> dict:
            return {
                "rule": {"id": row["id"], "title": row["title"], "jurisdiction": row["jurisdiction"],
                         "instrument": row["instrument"], "targets": json.loads(row["targets"]),
                         "subjects": json.loads(row["subjects"]), "tags": json.loads(row["tags"]),
                         "links": json.loads(row["links"])},
                "as_of": as_of, "known_at": known_at, "status": row["status"],
                "rate_percent": row["rate_percent"], "conditions": json.loads(row["conditions"]),
                "since": row["since"], "until": row["until"], "certain": True, "uncertain_because": [],
                "based_on": json.loads(row["based_on"]), "version": row["version"],
            }

        select = "SELECT * FROM rules r JOIN states s ON s.rule_id = r.id"

        @app.get("/healthz")
        def healthz() -> Any:
            return {"ok": True}

        @app.get("/api/v1/rules/<rule_id>")
        def rule(rule_id: str) -> Any:
            row = conn().execute(f"{select} WHERE r.id = ?", (rule_id,)).fetchone()
            if row is None:
                return problem(404, f"No rule {rule_id}.")
            return answer(row, date.today().isoformat(), now())

        @app.get("/api/v1/rules")
        def rules() -> Any:
            try:
                limit = min(int(request.args.get("limit", 100)), 1000)
            except ValueError:
                return problem(400, "limit must be a number", {"limit": "must be a number"})
            where, params = ["r.id > ?"], [request.args.get("cursor", "")]
            for name in ("jurisdiction", "instrument"):
                if name in request.args:
                    where.append(f"r.{name} = ?")
                    params.append(request.args[name])
            rows = conn().execute(f"{select} WHERE {' AND '.join(where)} ORDER BY r.id LIMIT ?",
                                  (*params, limit + 1)).fetchall()
            day, at = date.today().isoformat(), now()
            items = [answer(row, day, at) for row in rows[:limit]]
            return {"items": items, "next_cursor": rows[limit - 1]["id"] if len(rows) > limit else None,
                    "as_of": day, "known_at": at}

        @app.post("/api/v1/rules")
        def register() -> Any:
            if not may_write():
                return problem(401, "A write token is needed.")
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or set(body) - Peer.RULE_FIELDS or not {"id", "title"} <= set(body):
                return problem(422, "A rule needs an id and a title, and no other fields than a rule's.")
            with_lists = {k: json.dumps(body.get(k, [])) for k in ("targets", "subjects", "tags", "links")}
            c = conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("INSERT INTO rules VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                          (body["id"], body["title"], body.get("jurisdiction", ""), body.get("instrument", ""),
                           with_lists["targets"], with_lists["subjects"], with_lists["tags"],
                           with_lists["links"]))
                c.execute("INSERT INTO states VALUES (?, 'none', NULL, '[]', NULL, NULL, NULL, '[]', NULL)",
                          (body["id"],))
                c.execute("COMMIT")
            except sqlite3.IntegrityError:
                c.execute("ROLLBACK")
                return problem(409, f"Rule {body['id']} exists.")
            return body, 201

        @app.post("/api/v1/rules/<rule_id>/actions")
        def record(rule_id: str) -> Any:
            if not may_write():
                return problem(401, "A write token is needed.")
            action = request.get_json(silent=True)
            errors = {}
            if not isinstance(action, dict):
                return problem(422, "The body must be a JSON object.")
            for name in set(action) - Peer.ACTION_FIELDS:
                errors[name] = "unknown field"
            if action.get("kind") not in Peer.KINDS:
                errors["kind"] = "must be one of " + ", ".join(sorted(Peer.KINDS))
            if not Peer.DATE.match(str(action.get("effective", ""))):
                errors["effective"] = "must be YYYY, YYYY-MM or YYYY-MM-DD"
            if not action.get("sources"):
                errors["sources"] = "needs at least one source"
            if (action.get("kind") == "fee") != ("rate_percent" in action):
                errors["rate_percent"] = "is required on a fee, and only there"
            if errors:
                return problem(422, "The action is not valid.", errors)
            action_id = action.get("id") or uuid.uuid4().hex
            start = action["effective"] + "-01-01"[len(action["effective"]) - 4:]
            c = conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                state = c.execute("SELECT * FROM states WHERE rule_id = ?", (rule_id,)).fetchone()
                if state is None:
                    c.execute("ROLLBACK")
                    return problem(404, f"No rule {rule_id}.")
                recorded_at = now()
                position = c.execute(
                    "INSERT INTO actions (rule_id, id, effective_start, data, recorded_at) VALUES (?, ?, ?, ?, ?)",
                    (rule_id, action_id, start, json.dumps({**action, "id": action_id}), recorded_at)).lastrowid
                if state["last_start"] is None or start >= state["last_start"]:
                    current = {k: state[k] for k in ("status", "rate_percent", "since", "until")}
                    current["conditions"] = json.loads(state["conditions"])
                    current["before_pause"] = json.loads(state["before_pause"] or "null")
                    new = Peer.apply(current, action)
                    based_on = "json_insert(based_on, '$[#]', :id)"
                else:  # filled in before later actions: fold the rule's actions again, in order
                    new, ids = dict(Peer.EMPTY), []
                    for (data,) in c.execute("SELECT data FROM actions WHERE rule_id = ? "
                                             "ORDER BY effective_start, position", (rule_id,)):
                        earlier = json.loads(data)
                        new = Peer.apply(new, earlier)
                        ids.append(earlier["id"])
                    based_on = ":ids"
                c.execute(
                    f"UPDATE states SET status = :status, rate_percent = :rate, conditions = :conditions, "
                    f"since = :since, until = :until, before_pause = :before, based_on = {based_on}, "
                    f"last_start = max(coalesce(last_start, ''), :start) WHERE rule_id = :rule",
                    {"status": new["status"], "rate": new["rate_percent"],
                     "conditions": json.dumps(new["conditions"]), "since": new["since"],
                     "until": new["until"], "before": json.dumps(new["before_pause"]), "id": action_id,
                     "ids": json.dumps(ids) if based_on == ":ids" else None, "start": start,
                     "rule": rule_id})
                c.execute("UPDATE rules SET version = version + 1 WHERE id = ?", (rule_id,))
                c.execute("COMMIT")
            except sqlite3.IntegrityError:
                c.execute("ROLLBACK")
                return problem(409, f"Action {action_id} exists on {rule_id}.")
            return {"id": action_id, "position": position, "recorded_at": recorded_at}, 201

        # Served as timeline serves its Flask app: uvicorn in front, the app on THREADS threads.
        uvicorn.run(WSGIMiddleware(app, workers=THREADS), host="127.0.0.1", port=port,
                    interface="asgi3", log_config=None, access_log=False)


# Writes and reads, timeline next to the peer ------------------------------------------------


@dataclass
class Service:
    name: str
    port: int
    token: str
    process: subprocess.Popen
    figures: dict[str, Any] = field(default_factory=dict)
    next_day: dict[str, int] = field(default_factory=dict)

    def client(self) -> Client:
        return Client(self.port, self.token)

    def cpu_seconds(self) -> float:
        """The server's CPU time so far (user + system): less sensitive than wall time to other
        work on the machine."""
        seen = read_process(self.process.pid)
        return seen[1] if seen is not None else float("nan")


KIND_CYCLE = ("restrict", "fee", "ease", "ban")
DAY0 = date(2000, 1, 1)


def action_for(service: Service, rule_id: str) -> dict:
    """The rule's next action: kinds in turn, one day after its last one, with its own id."""
    n = service.next_day.get(rule_id, 0)
    service.next_day[rule_id] = n + 1
    kind = KIND_CYCLE[n % len(KIND_CYCLE)]
    action = {"id": f"{rule_id}-{n}", "kind": kind, "effective": (DAY0 + timedelta(days=n)).isoformat(),
              "summary": f"Benchmark action {n} on {rule_id}.",
              "sources": [{"title": "Benchmark source", "url": "https://example.org/bench"}]}
    if kind == "fee":
        action["rate_percent"] = n % 50 + 1
    if kind == "ease":
        action["conditions"] = [f"Condition {n % 7}"]
    return action


def write(client: Client, service: Service, rule_id: str) -> float:
    answer = client.post(f"/api/v1/rules/{rule_id}/actions", action_for(service, rule_id))
    if answer.status != 201:
        raise RuntimeError(f"{service.name}: writing to {rule_id} answered {answer.status}: {answer.body[:300]!r}")
    return answer.seconds


def register(client: Client, service: Service, rule_id: str, jurisdiction: str) -> None:
    body = {"id": rule_id, "title": f"Benchmark rule {rule_id}", "jurisdiction": jurisdiction,
            "instrument": "export_control", "targets": ["CN"], "subjects": ["benchmarks"],
            "tags": ["bench"], "links": []}
    answer = client.post("/api/v1/rules", body)
    if answer.status != 201:
        raise RuntimeError(f"{service.name}: registering {rule_id} answered {answer.status}: {answer.body[:300]!r}")


def in_parallel(service: Service, shares: list[list[str]], job: Callable[[Client, str], float]) -> tuple[float, list[float]]:
    """Run ``job`` on every item, one client thread per share; wall seconds and each job's time."""
    times: list[float] = []
    errors: list[BaseException] = []

    def run(share: list[str]) -> None:
        client = service.client()
        try:
            for item in share:
                times.append(job(client, item))
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start, times


def reads(service: Service, paths: list[str], clients: int) -> dict[str, Any]:
    def get(client: Client, path: str) -> float:
        answer = client.get(path)
        if answer.status != 200:
            raise RuntimeError(f"{service.name}: GET {path} answered {answer.status}")
        return answer.seconds

    wall, times = in_parallel(service, [paths[i::clients] for i in range(clients)], get)
    return {"per_s": len(paths) / wall, **summary(times)}


def start_timeline_writer(home: Path, log: Path) -> Service:
    env = {**os.environ, "TIMELINE_HOME": str(home), "TIMELINE_DATABASE_URL": ""}
    made = subprocess.run([sys.executable, "-m", "timeline", "token", "create", "bench"], env=env,
                          capture_output=True, text=True, check=True)
    token = made.stdout.strip().splitlines()[-1]
    server, port = serve_timeline(home, log)
    return Service("timeline", port, token, server)


def start_peer(db: Path, token: str, log: Path) -> Service:
    Peer.create(db, token)
    port = free_port()
    server = start_server([sys.executable, __file__, "--child", "peer", str(db), str(port)], {},
                          f"http://127.0.0.1:{port}/healthz", log)
    if server is None:
        raise RuntimeError(f"the peer did not start; see {log}")
    return Service("peer", port, token, server)


# The writes across many rules come in rounds, timeline and the peer taking turns.
WRITE_ROUNDS = 4


def measure_writes(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    work = args.out / "http-writes"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ours = start_timeline_writer(work / "home", work / "timeline.log")
    try:
        services = [start_peer(work / "peer.sqlite", ours.token, work / "peer.log"), ours]
    except BaseException:
        stop_server(ours.process)  # no server left behind when the peer cannot start
        raise
    rng = random.Random(args.seed)
    world = [f"bench-rule-{i:04d}" for i in range(args.rules)]
    long_rule = "bench-long-rule"
    clients = 4
    try:
        say("registering the rules")
        for service in services:
            client = service.client()
            for rule_id in world:
                register(client, service, rule_id, "NZ")
            register(client, service, long_rule, "AU")
            client.close()

        say(f"{args.writes} writes across {args.rules} rules, {clients} clients, in {WRITE_ROUNDS} rounds")
        targets = [rng.choice(world) for _ in range(args.writes)]
        spent = {service.name: [0.0, [], 0.0] for service in services}  # wall, times, CPU
        for k in range(WRITE_ROUNDS):
            # Turn by turn, each first in every other round: a minute of a slower machine
            # falls on both.
            chunk = targets[k * len(targets) // WRITE_ROUNDS:(k + 1) * len(targets) // WRITE_ROUNDS]
            by_client = [[rule for rule in chunk if world.index(rule) % clients == i] for i in range(clients)]
            for service in (services if k % 2 == 0 else services[::-1]):
                cpu = service.cpu_seconds()
                wall, times = in_parallel(service, by_client, lambda c, r, s=service: write(c, s, r))
                total = spent[service.name]
                total[0] += wall
                total[1] += times
                total[2] += service.cpu_seconds() - cpu
        for service in services:
            wall, times, cpu = spent[service.name]
            service.figures["writes"] = {"per_s": args.writes / wall, **summary(times),
                                         "cpu_s": cpu / args.writes}

        say("writes to one rule at about 10 actions")
        for service in services:
            client = service.client()
            for _ in range(10):
                write(client, service, long_rule)
            times = [write(client, service, long_rule) for _ in range(30)]
            service.figures["short_rule_writes"] = summary(times)
            client.close()

        say(f"filling the long rule to {args.long} actions")
        for service in services:
            client = service.client()
            start = time.perf_counter()
            while service.next_day[long_rule] < args.long:
                write(client, service, long_rule)
            service.figures["fill_s"] = time.perf_counter() - start
            client.close()

        say(f"{args.long_writes} writes to the rule of {args.long} actions")
        for service in services:
            client = service.client()
            start, cpu = time.perf_counter(), service.cpu_seconds()
            times = [write(client, service, long_rule) for _ in range(args.long_writes)]
            service.figures["long_rule_writes"] = {"per_s": args.long_writes / (time.perf_counter() - start),
                                                   **summary(times),
                                                   "cpu_s": (service.cpu_seconds() - cpu) / args.long_writes}
            client.close()

        say("reads")
        probes = [f"/api/v1/rules/{rng.choice(world)}" for _ in range(args.reads)]
        long_paths = [f"/api/v1/rules/{long_rule}"] * max(clients, args.reads // 4)
        world_path = "/api/v1/rules?jurisdiction=NZ&limit=1000"
        for service in services:
            reads(service, probes[:50], clients)  # warm up: connections, caches
            service.figures["reads"] = reads(service, probes, clients)
            service.figures["long_rule_reads"] = reads(service, long_paths, clients)
            service.figures["world"] = world_answer(service, world_path, len(world), args.world_requests)

        say("comparing answers")
        sample = [long_rule, *rng.sample(world, min(20, len(world)))]
        mismatches = compare(services, sample)
    finally:
        for service in services:
            stop_server(service.process)
    return {"peer": services[0].figures, "timeline": services[1].figures, "mismatches": mismatches,
            "rules": args.rules, "long": args.long}


def world_answer(service: Service, path: str, rules: int, requests: int) -> dict[str, Any]:
    """The world answer, timed; if the paged parameters are refused, the unpaged one, so noted."""
    client = service.client()
    try:
        first = client.get(path)
        note = ""
        if first.status == 400:
            path, note = re.sub(r"&limit=\d+", "", path), "limit refused (400): timed unpaged"
            first = client.get(path)
        if first.status != 200:
            return {"error": f"HTTP {first.status}"}
        items = len(json.loads(first.body)["items"])
        times = []
        for _ in range(requests):
            answer = client.get(path)
            times.append(answer.seconds)
        return {**summary(times), "bytes": len(answer.body), "items": items, "note": note,
                "complete": items == rules}
    finally:
        client.close()


COMPARED = ("status", "rate_percent", "conditions", "since", "until", "based_on", "version")


def compare(services: list[Service], rules: list[str]) -> list[str]:
    differences = []
    clients = [service.client() for service in services]
    for rule_id in rules:
        peer, ours = (json.loads(c.get(f"/api/v1/rules/{rule_id}").body) for c in clients)
        for name in COMPARED:
            if peer.get(name) != ours.get(name):
                differences.append(f"{rule_id} {name}: peer {peer.get(name)!r:.80}, timeline {ours.get(name)!r:.80}")
    for client in clients:
        client.close()
    return differences


# Reporting ----------------------------------------------------------------------------------


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**no**")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def _per_s(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"


def _size(count: int) -> str:
    return f"{count / MIB:.2f} MB" if count >= MIB / 10 else f"{count / 1024:.1f} kB"


def pages_table(small: dict, large: dict) -> list[str]:
    lines = [
        f"Busiest rule: {large['busiest_rule']} ({large['busiest_rule_actions']:,} actions) at "
        f"{large['actions']:,}; {small['busiest_rule']} ({small['busiest_rule_actions']:,}) at {small['actions']:,}.",
        "",
        f"| what | p50 ms at {large['actions']:,} | p99 ms | size | p50 ms at {small['actions']:,} | p99 ms | size "
        f"| p50 ratio | size ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for big, little in zip(large["rows"], small["rows"]):
        if "error" in big or "error" in little:
            why = big.get("error") or little.get("error")
            lines.append(f"| {big['name']} | not measured: {why} |  |  |  |  |  |  |  |  | **no** |")
            continue
        ratio = big["p50_s"] / little["p50_s"]
        size_ratio = big["bytes"] / little["bytes"]
        if big["kind"] == "page":
            target = "p50 ≤ 1 s, ≤ 2 MB, ratios ≤ 3"
            met = big["p50_s"] <= 1 and big["bytes"] <= 2 * MIB
        else:
            target = "p50 ≤ 0.3 s, ratios ≤ 3"
            met = big["p50_s"] <= 0.3
        met = met and ratio <= 3 and size_ratio <= 3
        lines.append(
            f"| {big['name']} | {_ms(big['p50_s'])} | {_ms(big['p99_s'])} | {_size(big['bytes'])} "
            f"| {_ms(little['p50_s'])} | {_ms(little['p99_s'])} | {_size(little['bytes'])} "
            f"| {ratio:.2f} | {size_ratio:.2f} | {target} | {_verdict(met)} |")
    return lines


def writes_table(w: dict) -> list[str]:
    peer, ours = w["peer"], w["timeline"]
    lines = [
        f"World: {w['rules']} rules of jurisdiction NZ and one long rule of {w['long']:,} actions "
        f"(filled in {ours['fill_s']:.1f} s by timeline, {peer['fill_s']:.1f} s by the peer).",
        "",
        "| measure | timeline | peer | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]

    def rate_row(what: str, key: str, limit: float) -> None:
        ratio = peer[key]["per_s"] / ours[key]["per_s"]  # how many times the peer's time per request
        lines.append(f"| {what}, per s (p50 ms) | {_per_s(ours[key]['per_s'])} ({_ms(ours[key]['p50_s'])}) "
                     f"| {_per_s(peer[key]['per_s'])} ({_ms(peer[key]['p50_s'])}) | {ratio:.2f} "
                     f"| ≤ {limit} × the peer's time | {_verdict(ratio <= limit)} |")

    rate_row("writes across many rules (4 clients)", "writes", 2)
    rate_row(f"writes to the rule of {w['long']:,} actions (1 client)", "long_rule_writes", 2)
    growth = ours["long_rule_writes"]["p50_s"] / ours["short_rule_writes"]["p50_s"]
    peer_growth = peer["long_rule_writes"]["p50_s"] / peer["short_rule_writes"]["p50_s"]
    lines.append(f"| write p50 ms at {w['long']:,} actions vs at ~10, on one rule "
                 f"| {_ms(ours['long_rule_writes']['p50_s'])} vs {_ms(ours['short_rule_writes']['p50_s'])} "
                 f"| {_ms(peer['long_rule_writes']['p50_s'])} vs {_ms(peer['short_rule_writes']['p50_s'])} "
                 f"| {growth:.2f} (peer {peer_growth:.2f}) | timeline's ≤ 1.5 | {_verdict(growth <= 1.5)} |")
    for what, key in (("across many rules", "writes"),
                      (f"to the rule of {w['long']:,} actions", "long_rule_writes")):
        lines.append(f"| server CPU ms per write {what} | {ours[key]['cpu_s'] * 1e3:.2f} "
                     f"| {peer[key]['cpu_s'] * 1e3:.2f} | {ours[key]['cpu_s'] / peer[key]['cpu_s']:.2f} "
                     f"| (for reading the rows above) | |")
    rate_row("single-rule reads (4 clients)", "reads", 1.5)
    rate_row(f"reads of the rule of {w['long']:,} actions (4 clients)", "long_rule_reads", 1.5)
    world_ours, world_peer = ours["world"], peer["world"]
    if "error" in world_ours or "error" in world_peer:
        lines.append(f"| {w['rules']}-rule world answer | not measured: "
                     f"{world_ours.get('error') or world_peer.get('error')} |  |  | ≤ 1.5 | **no** |")
    else:
        ratio = world_ours["p50_s"] / world_peer["p50_s"]
        note = f" ({world_ours['note']})" if world_ours["note"] else ""
        if not world_ours["complete"]:
            note += f" (answered {world_ours['items']} of {w['rules']} rules)"
        lines.append(f"| {w['rules']}-rule world answer (`limit=1000`), p50 ms, size{note} "
                     f"| {_ms(world_ours['p50_s'])}, {_size(world_ours['bytes'])} "
                     f"| {_ms(world_peer['p50_s'])}, {_size(world_peer['bytes'])} | {ratio:.2f} | ≤ 1.5 "
                     f"| {_verdict(ratio <= 1.5 and world_ours['complete'] and not world_ours['note'])} |")
    if w["mismatches"]:
        lines += ["", f"**{len(w['mismatches'])} answers differ between timeline and the peer**, e.g. "
                  f"{w['mismatches'][0]}"]
    else:
        lines += ["", "Both answered the same states (status, rate, conditions, since, until, based_on, version)."]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        if argv[1] == "peer":
            Peer.serve(Path(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000, help="actions of the small store")
    parser.add_argument("--large", type=int, default=1_000_000, help="actions of the large store")
    parser.add_argument("--home-small", type=Path,
                        help="a TIMELINE_HOME of --small actions to copy (default: make one)")
    parser.add_argument("--home-large", type=Path,
                        help="a TIMELINE_HOME of --large actions to copy (default: make one)")
    parser.add_argument("--make", action="store_true", help="generate and import the stores here")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per row at most")
    parser.add_argument("--row-seconds", type=float, default=30, help="time per row, after 3 requests")
    parser.add_argument("--rules", type=int, default=500, help="rules of the write world")
    parser.add_argument("--writes", type=int, default=2000, help="writes across the rules")
    parser.add_argument("--long", type=int, default=3000, help="actions on the long rule")
    parser.add_argument("--long-writes", type=int, default=200, help="timed writes to the long rule")
    parser.add_argument("--reads", type=int, default=2000, help="single-rule reads")
    parser.add_argument("--world-requests", type=int, default=20)
    parser.add_argument("--skip-pages", action="store_true", help="only the writes and reads")
    parser.add_argument("--quick", action="store_true",
                        help="a small run of every row: stores of 300 and 1,000 actions made here, "
                             "50 rules, a long rule of 100 actions, few requests")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.make = 300, 1000, True
        args.requests, args.row_seconds = 3, 1
        args.rules, args.writes, args.long, args.long_writes = 50, 100, 100, 20
        args.reads, args.world_requests = 100, 3
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say = progress(started)
    machine_text = machine()
    figures: dict[str, Any] = {"machine": machine_text, "command": " ".join(argv)}
    if not args.skip_pages:
        for key, actions, given in (("small", args.small, args.home_small), ("large", args.large, args.home_large)):
            say(f"pages and lists at {actions:,} actions")
            home = prepared_store(actions, given, args.make, args.out, args.seed, say)
            figures[key] = {"actions": actions, **measure_pages(home, args, say)}
            shutil.rmtree(home.parent, ignore_errors=True)
    say("writes and reads, timeline and the peer")
    figures["writes"] = measure_writes(args, say)

    report = [
        "# timeline over HTTP",
        "",
        f"Command: `{' '.join(['python bench/over_http.py', *argv])}`",
        f"Machine: {machine_text}; load average at end {os.getloadavg()[0]:.2f}; "
        f"run took {time.perf_counter() - started:.0f} s.",
        "",
    ]
    if not args.skip_pages:
        report += ["## Pages and lists", "", *pages_table(figures["small"], figures["large"]), ""]
    report += ["## Writes and reads next to a hand-written Flask + SQLite peer", "",
               *writes_table(figures["writes"])]
    text = "\n".join(report) + "\n"
    print(text)
    (args.out / "http-results.md").write_text(text)
    (args.out / "http-results.json").write_text(json.dumps(figures, indent=2))
    say(f"done; report in {args.out / 'http-results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
