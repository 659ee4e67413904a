"""The check of an export before it is imported: every line as the API would take it.

An import stores nothing unless every line of the file passes. Each line is checked with the
API's own marshmallow schemas, the one declaration of what is valid.
"""

from __future__ import annotations

import gc
import multiprocessing
from typing import Any, Callable, Iterable, Iterator

from marshmallow import Schema

from timeline.domain.errors import InvalidInput, TimelineError
from timeline.domain.kinds import (
    CORRECTABLE, apply_correction, check_action_fields, checked_fields, unchecked,
)
from timeline.domain.model import Rule
from timeline.events import (
    ACTION_CORRECTED, ACTION_RECORDED, ACTION_RETRACTED, EVENT_TYPES, RULE_REGISTERED, from_record,
)
from timeline.schemas import (
    CorrectionSchema, FileActionSchema, RetractionSchema, RuleSchema, errors_by_field,
)


def checked_events(records: Iterable[dict[str, Any]]) -> Iterator[Rule.Event]:
    """The events of an export's records, each given once it and everything before it passed.

    Raises :class:`InvalidInput` naming the line of the first record that would not replay on
    its rule (or that the API would refuse).
    """
    record_keys = {"type", "rule_id", "version", "recorded_at", "data", "request"}
    data_keys = {
        ACTION_CORRECTED: {"id", "action_id", "reason", "changes"},
        ACTION_RETRACTED: {"id", "action_id", "reason"},
    }
    # One instance of each schema for the whole file: making one per line cost more than the
    # validation itself (each instance deep-copies its fields, nested schemas included).
    schemas = (RuleSchema(), FileActionSchema(), RetractionSchema(), CorrectionSchema())
    rule_schema, action_schema, retraction_schema, correction_schema = schemas
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

        def valid(schema: Schema, data: dict[str, Any]) -> None:
            # The same schemas as the API: an import may hold nothing a request could not.
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
            yield event
            continue
        if version == 1:
            raise refuse(f"rule {rule_id!r} has events before its registration.")
        if kind == ACTION_RECORDED:
            valid(action_schema, data)
            if "id" not in data or data["id"] in known:
                raise refuse(f"action {data.get('id')!r} has no id or is recorded twice.")
            known[data["id"]] = kept(data)
            yield event
            continue
        current = known.get(data["action_id"]) if isinstance(data["action_id"], str) else None
        if current is None:
            raise refuse(f"no live action {data['action_id']!r} before it.",
                         {where: "names an unknown or retracted action"})
        if kind == ACTION_RETRACTED:
            valid(retraction_schema, {"reason": data["reason"]})
            known[data["action_id"]] = None
            yield event
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
        yield event


def check_export(records: Iterable[dict[str, Any]]) -> None:
    """Check an export's records without storing anything (see :func:`checked_events`)."""
    for _ in checked_events(records):
        pass


class CheckBeside:
    """:func:`check_export` of ``records()`` in a forked process, while the caller stores and
    builds from the same records; :meth:`verdict` waits for it and raises what it found.

    The check takes about as long as the storing and the build: on the second core, beside
    them, it keeps an import of a million actions within three minutes on two cores. The
    caller commits nothing before :meth:`verdict` returns. Where processes cannot be forked,
    the check runs first, here.
    """

    def __init__(self, records: Callable[[], Iterable[dict[str, Any]]]):
        self._found: BaseException | None = None
        self._process: Any = None
        if "fork" not in multiprocessing.get_all_start_methods():
            check_export(records())
            return
        # fork: ``records`` may be any callable (a closure over a file, a list in a test).
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe(duplex=False)
        self._process = context.Process(target=_check_in_child, args=(records, theirs),
                                        name="timeline-import-check", daemon=True)
        self._process.start()
        theirs.close()

    def verdict(self) -> None:
        """Wait for the check to end; raise what it found (InvalidInput naming the line)."""
        if self._process is not None:
            try:
                self._found = self._pipe.recv()
            except EOFError:
                self._process.join()
                self._found = TimelineError(f"the import's check stopped (exit code "
                                            f"{self._process.exitcode}); nothing was stored.")
            self._end()
        if self._found is not None:
            raise self._found

    def __enter__(self) -> CheckBeside:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._found = TimelineError("the import's check did not finish.")
            self._end()

    def _end(self) -> None:
        self._process.join()
        self._pipe.close()
        self._process = None


def _check_in_child(records: Callable[[], Iterable[dict[str, Any]]], pipe: Any) -> None:
    # The check keeps every rule's actions: collections would walk them over and over.
    gc.disable()
    try:
        check_export(records())
        found: BaseException | None = None
    except BaseException as exc:  # every finding goes back to the importing process
        found = exc
    try:
        pipe.send(found)
    except Exception:  # one that does not pickle: its text still does
        pipe.send(TimelineError(f"the import's check failed: {found!r}"))
    pipe.close()
