#!/usr/bin/env python3
"""Follow a timeline server's event feed, handling each event once, from a checkpoint file.

    python3 follow_feed.py http://127.0.0.1:8000 --checkpoint feed.position

Each event is handled (here: printed as one JSON line) and then its position is written to the
checkpoint file, so a restart carries on after the last event handled. Stop it with Ctrl-C or
SIGTERM and it finishes the event in hand first. If it is killed outright between handling an
event and writing the checkpoint, that one event is handled again on restart: make your handler
idempotent (the CloudEvent ``id`` is stable) or save the position in the same transaction as
your own writes.

Only the standard library is used, so the file can be copied as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

stopping = threading.Event()


def handle(event: dict) -> None:
    """Replace this with your own processing."""
    sys.stdout.write(json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n")
    sys.stdout.flush()


def read_checkpoint(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as stream:
            return int(stream.read().strip() or 0)
    except FileNotFoundError:
        return 0


def write_checkpoint(path: str, position: int) -> None:
    """Replace the file in one step, so a crash leaves the old position or the new one."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(f"{position}\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def fetch_page(base_url: str, after: int, limit: int) -> dict:
    query = urllib.parse.urlencode({"after": after, "limit": limit})
    url = f"{base_url.rstrip('/')}/api/v1/events?{query}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def follow(base_url: str, checkpoint: str, limit: int, poll: float, stop_at_head: bool) -> int:
    after = read_checkpoint(checkpoint)
    while not stopping.is_set():
        try:
            page = fetch_page(base_url, after, limit)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(f"feed unavailable ({exc}); trying again in {poll:g} s", file=sys.stderr)
            stopping.wait(poll)
            continue
        for event in page["events"]:
            handle(event)
            after = int(event["sequence"])
            write_checkpoint(checkpoint, after)
            if stopping.is_set():
                return after
        if len(page["events"]) < limit:  # at the head: nothing more for now
            if stop_at_head:
                return after
            stopping.wait(poll)
    return after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--checkpoint", default="feed.position",
                        help="file holding the last position handled (default: feed.position)")
    parser.add_argument("--limit", type=int, default=100, help="events per request (1-1000)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls at the head")
    parser.add_argument("--stop-at-head", action="store_true",
                        help="exit once every recorded event is handled, instead of following")
    args = parser.parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    position = follow(args.base_url, args.checkpoint, args.limit, args.poll, args.stop_at_head)
    print(f"stopped after position {position}", file=sys.stderr)


if __name__ == "__main__":
    main()
