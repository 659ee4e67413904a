"""Measure the research downloads next to a baseline writing the same rows from plain SQL.

    python bench/research.py --home COPY_OF_A_TIMELINE_HOME [--rounds 1]

HOME is a store with its read model built (a copy: serving may write to its read model). For
each download (all spells; a monthly panel of every rule for one year, --year) it measures, in
turns:

- the baseline: one plain SQL query on the read model giving the same columns in the same
  order (window functions for valid_to and changed, correlated subqueries for the state of a
  period and for based_on), from a sqlite3 cursor to csv.writer, into a file;
- the download over HTTP: `timeline serve` on a loopback port, read to the end by a client in
  this process, counting rows; the server's peak resident memory read from /proc (VmHWM);
- the download from the command line: `timeline spells` or `timeline panel` with --out, and its
  peak resident memory from wait4.

Every figure is rows per second and the ratio to the baseline's rate in the same round. The
rows are counted (CSV lines after the header) and must equal the baseline's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import date
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
sys.path[:0] = [str(SRC)]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))

from timeline.readmodel.research import period_ends  # noqa: E402

# Only the rows known at :k; a rule's state rows before its first action (based_on empty) are
# not spells.
_BASED_ON = """(SELECT json_group_array(action_id) FROM (
    SELECT action_id FROM action_starts a WHERE a.rule_id = r.id AND a.effective_start <= {day}
      AND a.known_from <= :k AND a.known_to > :k ORDER BY a.effective_start, a.ord))"""

BASELINE_SPELLS = f"""
SELECT * FROM (
  SELECT r.id, r.title, r.jurisdiction, r.instrument, r.targets, r.subjects, s.status,
         s.rate_percent, s.conditions, s.valid_from,
         lead(s.valid_from) OVER (PARTITION BY s.rule_id ORDER BY s.valid_from) AS valid_to,
         CASE WHEN s.certain THEN 'true' ELSE 'false' END AS certain, s.uncertain_because,
         {_BASED_ON.format(day="s.valid_from")} AS based_on, :k AS known_at
  FROM rules r JOIN states s ON s.rule_id = r.id AND s.known_from <= :k AND s.known_to > :k
  WHERE r.registered_at <= :k)
WHERE based_on != '[]'
ORDER BY id, valid_from
"""

BASELINE_PANEL = f"""
WITH periods(period) AS (SELECT value FROM json_each(:periods)),
cells AS (
  SELECT r.id, r.title, r.jurisdiction, r.instrument, r.targets, r.subjects, p.period,
         s.status, s.rate_percent, s.conditions, s.certain, s.uncertain_because, s.valid_from
  FROM rules r CROSS JOIN periods p
  JOIN states s ON s.rule_id = r.id AND s.known_from <= :k AND s.known_to > :k
   AND s.valid_from = (SELECT valid_from FROM states WHERE rule_id = r.id
                       AND valid_from <= p.period AND known_from <= :k AND known_to > :k
                       ORDER BY valid_from DESC LIMIT 1)
  WHERE r.registered_at <= :k)
SELECT c.id, c.title, c.jurisdiction, c.instrument, c.targets, c.subjects, c.status,
       c.rate_percent, c.conditions, c.period,
       CASE WHEN c.certain THEN 'true' ELSE 'false' END,
       c.uncertain_because, {_BASED_ON.format(day="c.valid_from").replace("r.id", "c.id")},
       :k,
       CASE WHEN lag(c.status) OVER w IS NULL THEN 'false'
            WHEN lag(c.status) OVER w IS NOT c.status
              OR lag(c.rate_percent) OVER w IS NOT c.rate_percent
              OR lag(c.conditions) OVER w IS NOT c.conditions THEN 'true'
            ELSE 'false' END
FROM cells c
WINDOW w AS (PARTITION BY c.id ORDER BY c.period)
ORDER BY c.id, c.period
"""


def baseline(readmodel: Path, sql: str, params: dict[str, Any], out: Path) -> tuple[int, float]:
    """Rows written and seconds: one query, from a sqlite3 cursor to csv.writer."""
    conn = sqlite3.connect(readmodel)
    start = time.perf_counter()
    rows = 0
    with open(out, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\r\n")
        for row in conn.execute(sql, params):
            writer.writerow(row)
            rows += 1
    seconds = time.perf_counter() - start
    conn.close()
    return rows, seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status figure, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Server:
    """`timeline serve` on a loopback port, started and stopped by this process."""

    def __init__(self, home: Path):
        self.port = _free_port()
        env = {**os.environ, "TIMELINE_HOME": str(home)}
        env.pop("TIMELINE_DATABASE_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "timeline", "serve", "--port", str(self.port)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not start")

    def download(self, path: str) -> tuple[int, int, float]:
        """Rows (lines after the header), bytes and seconds of one download, read to the end."""
        connection = HTTPConnection("127.0.0.1", self.port, timeout=600)
        start = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {response.read()[:300]!r}")
        lines = size = 0
        while chunk := response.read(1 << 16):
            lines += chunk.count(b"\n")
            size += len(chunk)
        seconds = time.perf_counter() - start
        connection.close()
        return lines - 1, size, seconds

    def peak_kib(self) -> int:
        return _vm(self.process.pid, "VmHWM")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def command_line(home: Path, args: list[str], out: Path) -> tuple[int, float, int]:
    """Rows, seconds and peak resident KiB of a `timeline` download written to ``out``."""
    env = {**os.environ, "TIMELINE_HOME": str(home)}
    env.pop("TIMELINE_DATABASE_URL", None)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "timeline", *args, "--out", str(out)],
                               env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"timeline {' '.join(args)} failed ({status})")
    with open(out, "rb") as stream:
        rows = sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b"")) - 1
    return rows, seconds, usage.ru_maxrss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True,
                        help="A TIMELINE_HOME with its read model built (a copy).")
    parser.add_argument("--year", type=int, default=2024, help="The panel's year.")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "research")
    options = parser.parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    readmodel = options.home / "readmodel.sqlite"
    conn = sqlite3.connect(readmodel)
    known_at = conn.execute("SELECT max(last_recorded_at) FROM rules").fetchone()[0]
    conn.close()
    first, last = date(options.year, 1, 1), date(options.year, 12, 31)
    periods = json.dumps(list(period_ends(first, last, "month")))
    downloads = {
        "spells": (BASELINE_SPELLS, {"k": known_at},
                   f"/api/v1/spells?known_at={known_at}", ["spells", "--known-at", known_at]),
        "panel": (BASELINE_PANEL, {"k": known_at, "periods": periods},
                  f"/api/v1/panel?from={first}&to={last}&every=month&known_at={known_at}",
                  ["panel", "--from", str(first), "--to", str(last), "--every", "month",
                   "--known-at", known_at]),
    }
    results: list[dict[str, Any]] = []
    server = Server(options.home)
    try:
        for round_number in range(1, options.rounds + 1):
            for name, (sql, params, path, args) in downloads.items():
                rows, seconds = baseline(readmodel, sql, params, options.out / f"{name}-baseline.csv")
                http_rows, size, http_seconds = server.download(path)
                cli_rows, cli_seconds, cli_kib = command_line(options.home, args,
                                                              options.out / f"{name}.csv")
                if not rows == http_rows == cli_rows:
                    raise RuntimeError(f"{name}: rows differ: baseline {rows}, HTTP {http_rows}, "
                                       f"command line {cli_rows}")
                result = {
                    "round": round_number, "download": name, "rows": rows, "bytes": size,
                    "baseline_rows_per_s": rows / seconds,
                    "http_rows_per_s": rows / http_seconds,
                    "cli_rows_per_s": rows / cli_seconds,
                    "http_ratio": seconds / http_seconds,
                    "cli_ratio": seconds / cli_seconds,
                    "server_peak_mib": server.peak_kib() / 1024,
                    "cli_peak_mib": cli_kib / 1024,
                }
                results.append(result)
                print(f"round {round_number} {name}: {rows:,} rows ({size / 2**20:,.0f} MiB); "
                      f"baseline {result['baseline_rows_per_s']:,.0f} rows/s; "
                      f"HTTP {result['http_rows_per_s']:,.0f} rows/s "
                      f"({result['http_ratio']:.2f}x), server peak "
                      f"{result['server_peak_mib']:.0f} MiB; command line "
                      f"{result['cli_rows_per_s']:,.0f} rows/s ({result['cli_ratio']:.2f}x), "
                      f"peak {result['cli_peak_mib']:.0f} MiB", flush=True)
    finally:
        server.stop()
    (options.out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
