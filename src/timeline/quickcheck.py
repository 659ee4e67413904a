"""A quick yes for data that plainly passes a marshmallow schema.

Checking every line of a large import with the API's schemas is most of the import's work:
marshmallow spends tens of microseconds on each action, almost all of it in its own machinery
rather than in the checks. :class:`QuickCheck` answers the common case, valid data, in a few
microseconds, without a second set of rules: the shape is checked by the JSON Schema that
apispec makes of the same marshmallow schema (the one the OpenAPI document shows), compiled by
jsonschema-rs, and whatever JSON Schema cannot say (a date that must exist, a country code, a URL,
a rule between fields) is checked by the schema's own field objects and validators.

It only ever says "certainly valid" or "cannot tell": on anything else the caller asks the
marshmallow schema, which stays the one authority and gives the messages. Where the JSON Schema
is stricter than marshmallow (its ``$`` does not match before a final newline, for one), data
goes the slow way and still gets marshmallow's answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import jsonschema_rs
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, ValidationError, fields, validate

from timeline.domain.errors import TimelineError

# Validators that apispec writes into the JSON Schema (minLength, pattern, enum, minimum...).
_SAID_BY_JSON_SCHEMA = (validate.Length, validate.Regexp, validate.OneOf, validate.Range)
# Fields whose whole meaning JSON Schema carries: type, and the validators above.
_PLAIN_FIELDS = (fields.String, fields.List, fields.Nested)

_Check = Callable[[Any], Any]


class QuickCheck:
    """``check(data)`` is True when ``schema.validate(data)`` certainly finds nothing (and
    ``then(data)``, if given, raises nothing); False when it cannot tell.

    ``then`` stands for the schema's own schema-level validators, which only code can run:
    pass the function they call.
    """

    def __init__(self, schema: Schema, then: Callable[[dict[str, Any]], Any] | None = None):
        self._shape = jsonschema_rs.Draft202012Validator(
            json_schema(schema), validate_formats=False, offline=True)
        self._fields = _schema_checks(schema)
        self._then = then

    def __call__(self, data: Any) -> bool:
        try:
            if not self._shape.is_valid(data):
                return False
        except (ValueError, TypeError, UnicodeError):  # not JSON data (a lone surrogate, say)
            return False
        try:
            if self._fields is not None:
                self._fields(data)
            if self._then is not None:
                self._then(data)
        except (ValidationError, TimelineError):
            return False
        return True


def json_schema(schema: Schema) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a marshmallow schema, nested schemas under ``$defs``."""
    spec = APISpec("quickcheck", "1", "3.1.0", plugins=[MarshmallowPlugin()])
    spec.components.schema("Root", schema=schema)
    components = spec.to_dict()["components"]["schemas"]
    # Nested schemas are components of the throwaway spec: point their references at $defs.
    text = json.dumps(components).replace('"#/components/schemas/', '"#/$defs/')
    definitions = json.loads(text)
    root = definitions.pop("Root")
    if definitions:
        root["$defs"] = definitions
    return root


def _schema_checks(schema: Schema) -> _Check | None:
    """What JSON Schema cannot say of ``schema``'s fields, as one check (None: nothing)."""
    checks = [
        (field.data_key or name, check)
        for name, field in schema.fields.items()
        if (check := _field_check(field)) is not None
    ]
    if not checks:
        return None

    def check_fields(data: dict[str, Any]) -> None:
        for key, check in checks:
            if key in data:
                check(data[key])

    return check_fields


def _field_check(field: fields.Field) -> _Check | None:
    """What JSON Schema cannot say of ``field``: a check raising ValidationError, or None."""
    if isinstance(field, fields.Url) and (check := _url_check(field)) is not None:
        return check
    if type(field) not in _PLAIN_FIELDS or not all(map(_said, field.validators)):
        return field.deserialize  # the field itself, with its own code and validators
    if isinstance(field, fields.Nested):
        if field.many:
            return field.deserialize
        return _schema_checks(field.schema)
    if isinstance(field, fields.List):
        inner = _field_check(field.inner)
        if inner is None:
            return None
        return lambda values: [inner(value) for value in values if value is not None]
    return None


def _url_check(field: fields.Url) -> _Check | None:
    """A web address field's check, with a quick yes for plain addresses.

    marshmallow's URL pattern takes about 8 us (its character classes hold every Unicode
    letter). An address made of a web scheme the field takes, a lower-case host name of the
    same labels as marshmallow's, a top-level domain of 2 to 6 letters, and nothing after the
    host but a path of non-space characters is one it accepts: this pattern is the part of
    its pattern that such an address takes. Anything else goes to the field itself.
    """
    validators = field.validators
    if len(validators) != 1 or not isinstance(validators[0], validate.URL):
        return None
    url = validators[0]
    schemes = sorted(url.schemes & {"http", "https"})
    if url.relative or not getattr(url, "absolute", True) or not url.require_tld or not schemes:
        return None
    plain = re.compile(
        "(?:" + "|".join(schemes) + r")://(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,6}"
        r"(?:/\S*)?\Z")
    slow = field.deserialize

    def check(value: Any) -> Any:
        if type(value) is str and plain.match(value):
            return value
        return slow(value)

    return check


def _said(validator: Any) -> bool:
    if isinstance(validator, validate.Regexp):
        # apispec writes the pattern, not its flags.
        return validator.regex.flags & ~re.UNICODE == 0
    return isinstance(validator, _SAID_BY_JSON_SCHEMA)
