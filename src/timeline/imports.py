"""Importing an export: the check of every line, run beside the storing of the same lines.

An import stores nothing unless the whole file passes :func:`check_export`. The check and the
store pass read the file at the same time, in two processes: the events go into one
transaction of the event store, committed only once the check has found nothing wrong
(:class:`CheckInParallel`).
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable, Iterable

from timeline.domain.errors import InvalidInput
from timeline.events import from_record
from timeline.readmodel.writer import HelperFailed, can_fork, name_process


class CheckInParallel:
    """:func:`check_export` over ``records()`` in a forked child, while the caller stores.

    ``poll()`` raises what the check found, if it has finished with a finding; ``wait()``
    waits for it to finish and raises what it found. The caller commits only after ``wait()``
    returns. Where processes cannot be forked, the check runs first, here.
    """

    def __init__(self, records: Callable[[], Iterable[dict[str, Any]]]):
        self._verdict: BaseException | None = None
        self._done = False
        if not can_fork():
            check_export(records())
            self._done = True
            return
        # fork: ``records`` is any callable (a closure over a file, a list in a test).
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe(duplex=False)
        self._process = context.Process(target=_check_in_child, args=(records, theirs),
                                        name="timeline-import-check", daemon=True)
        self._process.start()
        theirs.close()

    def poll(self) -> None:
        if not self._done and self._pipe.poll():
            self._receive()
        if self._verdict is not None:
            raise self._verdict

    def wait(self) -> None:
        """Wait for the check to finish, and raise what it found."""
        if not self._done:
            self._receive()
        if self._verdict is not None:
            raise self._verdict

    def close(self) -> None:
        if not self._done:
            self._process.kill()
            self._done = True
        if hasattr(self, "_process"):
            self._process.join()
            self._pipe.close()

    def __enter__(self) -> CheckInParallel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive(self) -> None:
        try:
            self._verdict = self._pipe.recv()
        except EOFError:
            self._process.join()
            self._verdict = HelperFailed(
                f"the import check stopped (exit code {self._process.exitcode})")
        self._done = True


def _check_in_child(records: Callable[[], Iterable[dict[str, Any]]], pipe: Any) -> None:
    # The importing process is the longer path (store, then fold): on a busy machine it goes
    # first, and the check takes the time it leaves. It ends before the commit all the same.
    name_process("timeline-check")
    os.nice(10)
    try:
        check_export(records())
        verdict: BaseException | None = None
    except BaseException as exc:  # every finding goes back to the importing process
        verdict = exc
    try:
        pipe.send(verdict)
    except Exception:  # an exception that does not pickle: its text still does
        pipe.send(HelperFailed(f"the import check failed: {verdict!r}"))
    pipe.close()


def check_export(records: Iterable[dict[str, Any]]) -> None:
    """Replay an export's events on their aggregates, without storing, to find what is wrong."""
    from timeline.domain.errors import TimelineError
    from timeline.domain.kinds import (
        CORRECTABLE, apply_correction, check_action_fields, checked_fields, unchecked,
    )
    from timeline.events import (
        ACTION_CORRECTED, ACTION_RECORDED, ACTION_RETRACTED, EVENT_TYPES, RULE_REGISTERED,
    )
    from timeline.quickcheck import QuickCheck
    from timeline.schemas import (
        CorrectionSchema, FileActionSchema, RetractionSchema, RuleSchema, errors_by_field,
    )

    record_keys = {"type", "rule_id", "version", "recorded_at", "data", "request"}
    data_keys = {
        ACTION_CORRECTED: {"id", "action_id", "reason", "changes"},
        ACTION_RETRACTED: {"id", "action_id", "reason"},
    }
    # One instance of each schema for the whole file: making one per line cost more than the
    # validation itself (each instance deep-copies its fields, nested schemas included).
    rule_schema, action_schema = RuleSchema(), FileActionSchema()
    retraction_schema, correction_schema = RetractionSchema(), CorrectionSchema()
    # Most lines are valid: a quick check passes them, and marshmallow reads the others.
    quick = {
        rule_schema: QuickCheck(rule_schema),
        action_schema: QuickCheck(action_schema, then=check_action_fields),
        retraction_schema: QuickCheck(retraction_schema),
        correction_schema: QuickCheck(correction_schema),
    }
    versions: dict[str, int] = {}
    # Each rule's actions as the export has them so far: corrections applied, None if retracted;
    # only the fields check_action_fields reads, so that a large file fits in memory.
    actions: dict[str, dict[str, tuple | None]] = {}
    shared: dict[str, str] = {}  # one copy of each date and kind, however many actions have it

    def kept(fields: dict[str, Any]) -> tuple:
        return tuple(shared.setdefault(v, v) if type(v) is str else v
                     for v in checked_fields(fields))

    last = ""
    for line, record in enumerate(records, start=1):
        where = f"line {line}"

        def refuse(detail: str, errors: dict[str, Any] | None = None) -> InvalidInput:
            return InvalidInput(f"{where}: {detail}", errors or {where: detail})

        def valid(schema: Any, data: dict[str, Any]) -> None:
            # The same schemas as the API: an import may hold nothing a request could not.
            if quick[schema](data):
                return
            problems = schema.validate(data)
            if problems:
                flat = errors_by_field(problems)
                raise refuse("; ".join(f"{k}: {v}" for k, v in flat.items()), flat)

        unknown = sorted(set(record) - record_keys)
        if unknown or record.get("type") not in EVENT_TYPES or not isinstance(
            record.get("data"), dict
        ):
            raise refuse("not an exported event (type, rule_id, version, recorded_at and a "
                         "data object, and nothing else).")
        request = record.get("request")
        if request is not None and not (
            isinstance(request, dict) and all(isinstance(v, str) for v in request.values())
        ):
            raise refuse("request must be an object of strings.")
        kind, data = record["type"], record["data"]
        if kind in data_keys and set(data) != data_keys[kind]:
            raise refuse(f"data must have exactly {', '.join(sorted(data_keys[kind]))}.")
        try:
            event = from_record(record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise refuse(f"not an exported event ({exc}).") from None
        rule_id = event.originator_id
        version = event.originator_version
        expected = versions.get(rule_id, 0) + 1
        if type(version) is not int or version != expected:
            raise refuse(f"rule {rule_id!r} version {version!r}, expected {expected}.",
                         {where: "events of a rule must follow each other"})
        if record["recorded_at"] <= last:
            raise refuse("record times must increase.", {where: "recorded_at out of order"})
        last = record["recorded_at"]
        versions[rule_id] = expected
        known = actions.setdefault(rule_id, {})
        if kind == RULE_REGISTERED:
            valid(rule_schema, data)
            if version != 1 or data["id"] != rule_id:
                raise refuse(f"rule {rule_id!r} registered twice or under another id.")
            for link in data.get("links", []):
                if link["rule"] not in versions:
                    raise refuse(f"a link names rule {link['rule']!r}, not registered before it.")
            continue
        if version == 1:
            raise refuse(f"rule {rule_id!r} has events before its registration.")
        if kind == ACTION_RECORDED:
            valid(action_schema, data)
            if "id" not in data or data["id"] in known:
                raise refuse(f"action {data.get('id')!r} has no id or is recorded twice.")
            known[data["id"]] = kept(data)
            continue
        current = known.get(data["action_id"]) if isinstance(data["action_id"], str) else None
        if current is None:
            raise refuse(f"no live action {data['action_id']!r} before it.",
                         {where: "names an unknown or retracted action"})
        if kind == ACTION_RETRACTED:
            valid(retraction_schema, {"reason": data["reason"]})
            known[data["action_id"]] = None
            continue
        changes = data["changes"]
        if not isinstance(changes, dict) or not changes or not set(changes) <= set(CORRECTABLE):
            raise refuse(f"a correction changes one or more of {', '.join(CORRECTABLE)}.")
        valid(correction_schema, {"reason": data["reason"], **changes})
        fields = apply_correction(unchecked(current), changes)
        try:
            check_action_fields(fields)
        except TimelineError as exc:
            raise refuse(exc.detail, exc.errors) from None
        known[data["action_id"]] = kept(fields)
