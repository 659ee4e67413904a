"""Time one rule's state as of a day through ``Tracker.state`` against the query alone.

    python bench/lookup_micro.py                       # SQLite, 10,000 actions, 5,000 lookups
    python bench/lookup_micro.py --lookups 20000 --repeat 3
    python bench/lookup_micro.py --database-url postgresql://postgres@127.0.0.1:5432/test?schema=bench
    python bench/lookup_micro.py --profile             # cProfile of the Tracker.state calls

It generates a history (bench/generate.py, cached under the temp directory), imports it into a
fresh TIMELINE_HOME (and the PostgreSQL schema, when given a URL: the schema is dropped first),
then takes, in turns for each probe so that all see the same machine (and each in turn
first, so that none always reads the probe's pages cold):

- ``tracker.state(rule, as_of)``: what the CLI and the API call, known_at barrier included;
- ``tracker.known_at()`` alone: the barrier;
- ``queries.rule_state(conn, ...)`` alone: the read-model query, no barrier;
- the hand-written query of bench/run.py (an indexed table of state intervals).

It prints p50/p99 in microseconds for each, and the ratios of the tracker's p50 to the query's
and to the hand-written query's.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
sys.path[:0] = [str(BENCH), str(SRC)]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))

from generate import generate_file  # noqa: E402
from run import HandTable, percentile  # noqa: E402


def build(home: Path, history: Path, database_url: str | None) -> None:
    env = {**os.environ, "TIMELINE_HOME": str(home), "TIMELINE_DATABASE_URL": database_url or ""}
    if database_url:
        import psycopg
        from psycopg import sql

        from timeline.config import Settings

        schema = Settings(home=home, database_url=database_url).postgres_schema
        with psycopg.connect(database_url.split("?", 1)[0], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    subprocess.run([sys.executable, "-m", "timeline", "import", str(history)], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of --lookups, each reported")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="a postgresql:// URL (default SQLite)")
    parser.add_argument("--profile", action="store_true", help="profile the Tracker.state calls")
    args = parser.parse_args()

    from timeline.config import Settings
    from timeline.domain.dates import parse_day
    from timeline.readmodel import queries
    from timeline.service import Tracker

    tmp = Path(tempfile.gettempdir())
    history = tmp / f"timeline-history-{args.actions}-s{args.seed}.jsonl"
    if not history.exists():
        generate_file(history, args.actions, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="lookup-micro-") as work:
        home = Path(work) / "home"
        build(home, history, args.database_url)
        tracker = Tracker(Settings(home=home, database_url=args.database_url))
        hand_path = Path(work) / "hand.sqlite"
        HandTable.build(tracker.settings.readmodel_path, hand_path)
        hand = HandTable.connect(hand_path)
        rng = random.Random(args.seed)
        rule_ids = [row[0] for row in hand.execute("SELECT id FROM rules ORDER BY id")]
        day0 = date(2008, 1, 1)
        probes = [(rng.choice(rule_ids), parse_day((day0 + timedelta(days=rng.randrange(22 * 365)))
                                                   .isoformat())) for _ in range(args.lookups)]
        conn = tracker.readmodel.connection()
        known_at = tracker.known_at()
        clock = time.perf_counter
        for _ in range(200):  # warm caches and connections
            tracker.state(*probes[0])

        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for rule_id, as_of in probes:
                tracker.state(rule_id, as_of)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)

        for round_ in range(1, args.repeat + 1):
            times: dict[str, list[float]] = {"Tracker.state": [], "Tracker.known_at": [],
                                             "queries.rule_state": [], "hand-written": []}
            for n, (rule_id, as_of) in enumerate(probes):
                day = as_of.isoformat()
                calls = [
                    ("Tracker.state", lambda: tracker.state(rule_id, as_of)),
                    ("Tracker.known_at", tracker.known_at),
                    ("queries.rule_state", lambda: queries.rule_state(conn, rule_id, day, known_at)),
                    ("hand-written", lambda: HandTable.state(hand, rule_id, day, known_at)),
                ]
                # Each in turn goes first: the first to read a rule's pages finds them colder.
                for name, call in calls[n % 4:] + calls[:n % 4]:
                    start = clock()
                    call()
                    times[name].append(clock() - start)
            store = "PostgreSQL" if args.database_url else "SQLite"
            print(f"round {round_}: {args.lookups} lookups, {store}, {args.actions} actions")
            p50 = {name: percentile(values, 0.5) * 1e6 for name, values in times.items()}
            for name, values in times.items():
                print(f"  {name:20} p50 {p50[name]:7.1f} us   p99 {percentile(values, 0.99) * 1e6:7.1f} us")
            print(f"  Tracker.state / queries.rule_state  {p50['Tracker.state'] / p50['queries.rule_state']:.2f}x")
            print(f"  Tracker.state / hand-written        {p50['Tracker.state'] / p50['hand-written']:.2f}x")
        hand.close()
        tracker.close()


if __name__ == "__main__":
    main()
