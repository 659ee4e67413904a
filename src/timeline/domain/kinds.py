"""The eight kinds of action, each declared once: the event that records it, the fields it takes,
the checks on them, and what it does to a rule's state as the fold applies it.

The aggregate (``model.py``) records each kind as the event named here and checks it with
:func:`check_action_fields`; the fold (``fold.py``) applies each kind's ``effect``; the schemas
read the names from :data:`KINDS`. A correction is applied by :func:`apply_correction`, everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from timeline.domain.dates import InvalidDate, PolicyDate
from timeline.domain.errors import InvalidInput

if TYPE_CHECKING:
    from timeline.domain.fold import Action, Fold

ACTION_FIELDS = (
    "id", "kind", "effective", "announced", "rate_percent", "until", "conditions", "summary",
    "sources",
)
CORRECTABLE = ("effective", "announced", "rate_percent", "until", "conditions", "summary", "sources")
MAX_RATE_PERCENT = 1000


@dataclass(frozen=True)
class Kind:
    """One kind of action."""

    name: str
    event: str  # the name of the event class recording it (stored with every event: never rename)
    effect: Callable[[Fold, Action], None]
    rate: bool = False  # takes (and needs) rate_percent
    until: bool = False  # may end on its own on an until day
    conditions: bool = True  # may give conditions


# What each kind does to the fold ---------------------------------------------------------------


def _sets_status(status: str) -> Callable[[Fold, Action], None]:
    """ban, restrict and ease: the status they name; a pause ends, and what it suspended
    resumes but its status."""

    def effect(fold: Fold, action: Action) -> None:
        fold.leave_pause()
        fold.status = status
        fold.since = action.effective.text
        if action.conditions is not None:
            fold.conditions = action.conditions

    return effect


def _fee(fold: Fold, action: Action) -> None:
    """Sets the rate (0 removes it); a rate in force on a rule without a measure puts it in force.
    During a pause the fee changes what the pause will give back."""
    rate = action.rate_percent if action.rate_percent else None
    given = action.conditions
    if fold.underlying is not None:
        fold.underlying.rate_percent = rate
        if given is not None:
            fold.underlying.conditions = given
        return
    fold.rate_percent = rate
    if rate is not None and fold.status in ("none", "proposed", "lifted"):
        fold.status = "in_force"
        fold.since = action.effective.text
    if given is not None:
        fold.conditions = given


def _pause(fold: Fold, action: Action) -> None:
    """Suspends the status, rate and conditions until a resume, a measure or its until day."""
    if fold.underlying is None:
        fold.suspend(action.effective.text)
    if action.conditions is not None:
        assert fold.underlying is not None
        fold.underlying.conditions = action.conditions
    fold.pause = action
    fold.until = action.until


def _resume(fold: Fold, action: Action) -> None:
    if fold.underlying is not None:
        fold.end_pause(action.effective.text)


def _lift(fold: Fold, action: Action) -> None:
    fold.underlying = None
    fold.pause = None
    fold.until = None
    fold.status = "lifted"
    fold.rate_percent = None
    fold.conditions = ()
    fold.since = action.effective.text


def _propose(fold: Fold, action: Action) -> None:
    if fold.status in ("none", "lifted"):
        fold.status = "proposed"
        fold.since = action.effective.text
    if action.conditions is not None:
        if fold.underlying is not None:
            fold.underlying.conditions = action.conditions
        else:
            fold.conditions = action.conditions


BY_NAME: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("ban", "Banned", _sets_status("banned")),
    Kind("restrict", "Restricted", _sets_status("restricted")),
    Kind("ease", "Eased", _sets_status("eased")),
    Kind("fee", "FeeSet", _fee, rate=True),
    Kind("pause", "Paused", _pause, until=True),
    Kind("resume", "Resumed", _resume, conditions=False),
    Kind("lift", "Lifted", _lift, conditions=False),
    Kind("propose", "Proposed", _propose),
)}
KINDS = tuple(BY_NAME)


# The checks ------------------------------------------------------------------------------------


def check_action_fields(fields: Mapping[str, Any]) -> None:
    """The contract's rules that tie an action's fields to its kind."""
    errors: dict[str, str] = {}
    kind = BY_NAME.get(fields["kind"])
    if kind is None:
        errors["kind"] = f"must be one of {', '.join(KINDS)}"
        raise _invalid(errors)
    dates: dict[str, PolicyDate] = {}
    for name in ("effective", "announced", "until"):
        if fields.get(name) is not None:
            try:
                dates[name] = PolicyDate.parse(fields[name])
            except InvalidDate as exc:
                errors[name] = str(exc)
    rate = fields.get("rate_percent")
    if kind.rate:
        if rate is None:
            errors["rate_percent"] = "is required on a fee (0 removes the fee)"
        elif not 0 <= rate <= MAX_RATE_PERCENT:
            errors["rate_percent"] = f"must be from 0 to {MAX_RATE_PERCENT}"
    elif rate is not None:
        errors["rate_percent"] = "is only allowed on a fee"
    if fields.get("until") is not None:
        if not kind.until:
            errors["until"] = "is only allowed on a pause"
        elif "until" in dates and "effective" in dates:
            if dates["until"].start <= dates["effective"].start:
                errors["until"] = "must start after the effective date"
    if not kind.conditions and fields.get("conditions") is not None:
        errors["conditions"] = f"are not allowed on {kind.name}: it keeps no conditions of its own"
    if errors:
        raise _invalid(errors)


def _invalid(errors: dict[str, str]) -> InvalidInput:
    # Said as the API says fields its schemas refuse, so that a user sees one kind of message.
    return InvalidInput("Some fields are not valid: "
                        + "; ".join(f"{name}: {message}" for name, message in errors.items()),
                        errors)


# What check_action_fields reads of an action, in the order checked_fields keeps it.
CHECKED_FIELDS = ("kind", "effective", "announced", "rate_percent", "until", "conditions")


def checked_fields(fields: Mapping[str, Any]) -> tuple:
    """What :func:`check_action_fields` reads of an action, enough to check a later correction
    of it: a tuple in the order of ``CHECKED_FIELDS``, None where not given (and conditions
    only for being given), small enough to keep for every action of a large import."""
    conditions = fields.get("conditions")
    return (fields.get("kind"), fields.get("effective"), fields.get("announced"),
            fields.get("rate_percent"), fields.get("until"), None if conditions is None else ())


def unchecked(kept: tuple | list) -> dict[str, Any]:
    """The fields :func:`checked_fields` kept, as :func:`check_action_fields` takes them."""
    return {name: value for name, value in zip(CHECKED_FIELDS, kept) if value is not None}


# Corrections -----------------------------------------------------------------------------------


def apply_correction(fields: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """An action's fields after a correction: each change replaces its field, and a change to
    None removes the field."""
    result = {**fields, **changes}
    for name, value in changes.items():
        if value is None:
            del result[name]
    return result
