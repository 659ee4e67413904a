"""A seeded generator of realistic policy histories, written as a ``timeline export`` file.

    python bench/generate.py --actions 1000000 --out bench/out/history-1000000.jsonl
    timeline import bench/out/history-1000000.jsonl

The same seed and size always give the same file. The history looks like a trade-policy
database such as the Global Trade Alert one: rules registered over the years by many
jurisdictions, most with a handful of actions and a few with hundreds (tariff schedules that
change every few months), interleaved in record time the way a team of researchers records
them. About 5% of actions are recorded out of effective order (history filled in later), 2%
are corrected, 1% retracted, and effective dates come to the day, the month or the year.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import IO, Iterator

JURISDICTIONS = ("US", "CN", "EU", "JP", "KR", "TW", "IN", "GB", "CA", "MX", "BR", "AU", "RU",
                 "SG", "VN", "ID", "TR", "SA", "ZA", "NL", "DE", "FR", "MY", "TH", "CH")
INSTRUMENTS = ("export_control", "import_tariff", "purchase_restriction", "investment_restriction",
               "sanction", "legislation", "trade_commitment", "other")
SUBJECTS = ("Nvidia H200", "Nvidia H20", "HBM memory", "EUV lithography", "gallium", "germanium",
            "rare earth magnets", "graphite", "soybeans", "steel", "aluminium", "solar panels",
            "electric vehicles", "lithium batteries", "fentanyl precursors", "semiconductors",
            "AI model weights", "drones", "pork", "beef", "wheat", "timber", "copper", "antimony")
TAGS = ("chips", "ai", "critical-minerals", "agriculture", "energy", "retaliation",
        "national-security", "fentanyl", "autos", "metals")
RELATIONS = ("amends", "blocks", "retaliates_against", "replaces", "related")
WORDS = ("licence", "requirement", "exports", "imports", "tariff", "entity", "list", "ministry",
         "commerce", "announced", "effective", "schedule", "goods", "origin", "quota", "review",
         "national", "security", "exemption", "suppliers", "approval", "customs", "duty",
         "notice", "federal", "register", "council", "regulation", "measure", "extended")
PUBLISHERS = ("Federal Register", "MOFCOM", "Official Journal of the EU", "METI", "Reuters",
              "Bloomberg", "Financial Times", "BIS", "USTR", "GACC")
CONDITIONS = ("case-by-case review", "end-use certificate", "quota of 10,000 tonnes",
              "licence needed above 1,000 units", "exempt for existing contracts",
              "US persons only", "no military end users", "annual reporting")

# Kinds as a mix seen in trade-policy trackers: tariffs and licence requirements dominate.
KIND_WEIGHTS = (("fee", 24), ("restrict", 20), ("ban", 10), ("ease", 11), ("propose", 10),
                ("pause", 8), ("resume", 6), ("lift", 11))
KIND_CODES = {kind: code for code, (kind, _) in enumerate(KIND_WEIGHTS)}
KIND_NAMES = [kind for kind, _ in KIND_WEIGHTS]
RETRACTED = 0x80  # high bit of a rule's per-action byte: the action was retracted

START_OF_RECORD = datetime(2019, 1, 1, tzinfo=timezone.utc)


@dataclass
class Shares:
    """The mix of the history, as fractions of the number of actions."""

    out_of_order: float = 0.05
    corrected: float = 0.02
    retracted: float = 0.01
    month_precision: float = 0.12
    year_precision: float = 0.03


@dataclass
class _Rule:
    id: str
    day: int  # the newest effective day recorded so far (ordinal)
    version: int = 1
    actions: bytearray = field(default_factory=bytearray)  # one kind code per action


@dataclass
class Counts:
    rules: int = 0
    actions: int = 0
    out_of_order: int = 0
    corrected: int = 0
    retracted: int = 0
    events: int = 0


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _date_text(rng: random.Random, day: date, shares: Shares) -> str:
    roll = rng.random()
    if roll < shares.year_precision:
        return f"{day.year:04d}"
    if roll < shares.year_precision + shares.month_precision:
        return f"{day.year:04d}-{day.month:02d}"
    return day.isoformat()


def _period_start(text: str) -> date:
    parts = [int(p) for p in text.split("-")]
    return date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)


class HistoryGenerator:
    """Yields export records in record order; memory grows with the number of rules only."""

    def __init__(self, actions: int, rules: int | None = None, seed: int = 7,
                 shares: Shares | None = None):
        self.total_actions = actions
        self.total_rules = rules if rules is not None else max(1, actions // 10)
        self.seed = seed
        self.shares = shares or Shares()
        self.counts = Counts()

    def records(self) -> Iterator[dict]:
        rng = random.Random(self.seed)
        shares = self.shares
        n_rules = self.total_rules
        # How busy each rule is: a Pareto tail, so that the median rule has about six actions
        # and the busiest, registered early, several hundred (at 10 actions per rule).
        weights = [min(rng.paretovariate(1.5), 60.0) for _ in range(n_rules)]
        cumulative = list(accumulate(weights))
        kinds = [kind for kind, _ in KIND_WEIGHTS]
        kind_weights = list(accumulate(w for _, w in KIND_WEIGHTS))
        rules: list[_Rule] = []
        instant = START_OF_RECORD
        corrections_left = round(self.total_actions * shares.corrected)
        retractions_left = round(self.total_actions * shares.retracted)
        actions_left = self.total_actions
        # The first tenth of the rules are there from the start (a database being migrated).
        head_start = max(1, n_rules // 10)
        while actions_left or corrections_left or retractions_left or len(rules) < n_rules:
            instant += timedelta(microseconds=rng.randint(1, 90_000_000))
            remaining = actions_left + corrections_left + retractions_left
            unregistered = n_rules - len(rules)
            if unregistered and (len(rules) < head_start or not remaining
                                 or rng.random() < unregistered / (unregistered + remaining)):
                yield self._register(rng, rules, instant)
                continue
            roll = rng.randrange(remaining)
            rule = rules[bisect.bisect_left(cumulative, rng.random() * cumulative[len(rules) - 1],
                                            hi=len(rules) - 1)]
            if roll < actions_left or not rule.actions:
                if roll >= actions_left:
                    continue  # a correction drawn for a rule with nothing to correct: draw again
                actions_left -= 1
                kind = rng.choices(kinds, cum_weights=kind_weights)[0]
                yield self._action(rng, rule, kind, instant)
            elif roll < actions_left + corrections_left:
                record = self._correction(rng, rule, instant)
                if record is not None:
                    corrections_left -= 1
                    yield record
            else:
                record = self._retraction(rng, rule, instant)
                if record is not None:
                    retractions_left -= 1
                    yield record

    # One event of each type ---------------------------------------------------------------

    def _envelope(self, type_: str, rule: _Rule, instant: datetime, data: dict) -> dict:
        self.counts.events += 1
        return {"type": type_, "rule_id": rule.id, "version": rule.version,
                "recorded_at": instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "data": data}

    def _register(self, rng: random.Random, rules: list[_Rule], instant: datetime) -> dict:
        number = len(rules) + 1
        jurisdiction = rng.choice(JURISDICTIONS)
        instrument = rng.choice(INSTRUMENTS)
        subject = rng.choice(SUBJECTS)
        rule = _Rule(id=f"{jurisdiction.lower()}-{instrument.replace('_', '-')}-{number:07d}",
                     day=date(2008, 1, 1).toordinal() + rng.randrange(17 * 365))
        links = []
        if rules and rng.random() < 0.2:
            other = rules[rng.randrange(len(rules))]
            links.append({"rule": other.id, "relation": rng.choice(RELATIONS)})
        targets = sorted({rng.choice(JURISDICTIONS) for _ in range(rng.randint(0, 3))} - {jurisdiction})
        data = {"id": rule.id, "title": f"{jurisdiction} {instrument.replace('_', ' ')} on {subject}"
                f" ({number})", "jurisdiction": jurisdiction, "instrument": instrument,
                "targets": targets, "subjects": [subject], "tags": [rng.choice(TAGS)], "links": links}
        rules.append(rule)
        self.counts.rules += 1
        return self._envelope("timeline.rule.registered", rule, instant, data)

    def _action(self, rng: random.Random, rule: _Rule, kind: str, instant: datetime) -> dict:
        shares = self.shares
        if rule.actions and rng.random() < shares.out_of_order:
            # History filled in later: this action took effect before ones already recorded.
            day = date.fromordinal(rule.day - rng.randint(1, 720))
            self.counts.out_of_order += 1
        else:
            rule.day += rng.randint(0, 120)
            day = date.fromordinal(rule.day)
        index = len(rule.actions)
        effective = _date_text(rng, day, shares)
        action: dict = {"id": f"a{index + 1}", "kind": kind, "effective": effective}
        if rng.random() < 0.4:
            action["announced"] = (day - timedelta(days=rng.randint(0, 60))).isoformat()
        if kind == "fee":
            action["rate_percent"] = rng.choice((0, 7.5, 10, 15, 20, 25, 34, 50, 100, 145))
        if kind == "pause":
            start = _period_start(effective)
            if rng.random() < 0.7:
                until = start + timedelta(days=rng.randint(30, 365))
                action["until"] = until.isoformat() if rng.random() < 0.8 else \
                    f"{until.year:04d}-{until.month:02d}" if date(until.year, until.month, 1) > start \
                    else until.isoformat()
        if kind in ("ban", "restrict", "ease", "fee", "propose") and rng.random() < 0.3:
            action["conditions"] = rng.sample(CONDITIONS, rng.randint(1, 2))
        action["summary"] = _words(rng, 6, 16)
        sources = [{"title": _words(rng, 3, 7), "url": f"https://example.org/{rule.id}/{index + 1}",
                    "publisher": rng.choice(PUBLISHERS), "published": day.isoformat()}]
        if rng.random() < 0.2:
            sources.append({"title": _words(rng, 3, 7), "quote": _words(rng, 8, 20)})
        action["sources"] = sources
        rule.version += 1
        rule.actions.append(KIND_CODES[kind])
        self.counts.actions += 1
        return self._envelope("timeline.action.recorded", rule, instant, action)

    def _live_action(self, rng: random.Random, rule: _Rule) -> int | None:
        for _ in range(4):
            index = rng.randrange(len(rule.actions))
            if not rule.actions[index] & RETRACTED:
                return index
        return None

    def _correction(self, rng: random.Random, rule: _Rule, instant: datetime) -> dict | None:
        index = self._live_action(rng, rule)
        if index is None:
            return None
        kind = KIND_NAMES[rule.actions[index]]
        choice = rng.random()
        if kind == "fee" and choice < 0.5:
            changes: dict = {"rate_percent": rng.choice((10, 25, 30, 60))}
        elif kind != "pause" and choice < 0.8:
            # A wrong effective date: the correction moves it, sometimes only to the month.
            changes = {"effective": _date_text(rng, date.fromordinal(rule.day - rng.randint(0, 400)),
                                               self.shares)}
        else:
            changes = {"summary": _words(rng, 6, 16)}
        rule.version += 1
        self.counts.corrected += 1
        data = {"id": f"correction-{rule.id}-{rule.version}", "action_id": f"a{index + 1}",
                "reason": "corrected after checking the official notice", "changes": changes}
        return self._envelope("timeline.action.corrected", rule, instant, data)

    def _retraction(self, rng: random.Random, rule: _Rule, instant: datetime) -> dict | None:
        index = self._live_action(rng, rule)
        if index is None:
            return None
        rule.actions[index] |= RETRACTED
        rule.version += 1
        self.counts.retracted += 1
        data = {"id": f"retraction-{rule.id}-{rule.version}", "action_id": f"a{index + 1}",
                "reason": "recorded in error: the measure was never adopted"}
        return self._envelope("timeline.action.retracted", rule, instant, data)


def write(generator: HistoryGenerator, stream: IO[str]) -> Counts:
    """Write every record as one JSON line, as ``timeline export`` does."""
    dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
    for record in generator.records():
        stream.write(dumps(record) + "\n")
    return generator.counts


def generate_file(path: Path, actions: int, rules: int | None = None, seed: int = 7) -> Counts:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        return write(HistoryGenerator(actions, rules, seed), stream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actions", type=int, default=1_000_000, help="actions to record (default 1,000,000)")
    parser.add_argument("--rules", type=int, default=None, help="rules to register (default: actions / 10)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    if args.actions < 0 or (args.rules is not None and args.rules < 1):
        parser.error("--actions must be >= 0 and --rules >= 1")
    if args.out is None:
        counts = write(HistoryGenerator(args.actions, args.rules, args.seed), sys.stdout)
    else:
        counts = generate_file(args.out, args.actions, args.rules, args.seed)
    print(f"{counts.events} events: {counts.rules} rules, {counts.actions} actions "
          f"({counts.out_of_order} out of effective order), {counts.corrected} corrections, "
          f"{counts.retracted} retractions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
