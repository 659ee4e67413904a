"""Run a command and say how much CPU each process of it used.

    TIMELINE_HOME=bench/out/run-1000000/home python bench/cpu_by_process.py timeline rebuild

Every process of the command's tree (a server's workers, say) is read from /proc every
``--every`` seconds while it runs, by the name it shows (its own, if it set /proc/self/comm), and
the last reading of each is kept: a process's user + system time, up to the last reading before
it ended. Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Seen:
    name: str
    cpu_seconds: float
    first_seen: float


def read_process(pid: int) -> tuple[str, float] | None:
    """The name (comm) and CPU seconds (user + system) of a process, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The name is in parentheses and may hold spaces and parentheses itself.
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[11] and [12] are utime and stime (the 14th and 15th of the whole line).
    return name, (int(fields[11]) + int(fields[12])) / TICKS


def tree(pid: int) -> Iterator[int]:
    """``pid`` and every process descended from it, as /proc shows them now (the children of
    every thread: a process may fork from any of them)."""
    pending = [pid]
    while pending:
        current = pending.pop()
        yield current
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue  # gone meanwhile
        for thread in threads:
            try:
                pending += [int(child) for child in
                            Path(f"/proc/{current}/task/{thread}/children").read_text().split()]
            except OSError:
                pass


def watch(command: list[str], every: float = 0.1) -> tuple[int, float, dict[int, Seen]]:
    """Run ``command`` to its end; its exit code, wall time and each process's last reading."""
    started = time.perf_counter()
    process = subprocess.Popen(command)
    seen: dict[int, Seen] = {}
    while process.poll() is None:
        for pid in tree(process.pid):
            reading = read_process(pid)
            if reading is None:
                continue
            name, cpu = reading
            if pid in seen:
                seen[pid].name, seen[pid].cpu_seconds = name, cpu
            else:
                seen[pid] = Seen(name, cpu, time.perf_counter() - started)
        time.sleep(every)
    return process.returncode, time.perf_counter() - started, seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=0.1, help="seconds between readings")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("give a command to run")
    if not Path("/proc/self/stat").exists():
        parser.error("this reads /proc, which this system does not have")
    code, wall, seen = watch(args.command, args.every)
    print(f"{' '.join(args.command)}: exit code {code}, {wall:.1f} s")
    print("| process | name | started at s | CPU s |")
    print("|---|---|---|---|")
    for pid, process in sorted(seen.items(), key=lambda item: (item[1].first_seen, item[0])):
        print(f"| {pid} | {process.name} | {process.first_seen:.1f} | {process.cpu_seconds:.1f} |")
    total = sum(process.cpu_seconds for process in seen.values())
    print(f"| all | | | {total:.1f} |")
    return code


if __name__ == "__main__":
    sys.exit(main())
