"""Request models whose numbers are numbers.

pydantic's lax mode turns ``true``/``false`` into 1/0 for ``int`` and ``float`` fields, and 0/1 or
"yes" into booleans. A JSON body that sends a boolean where the schema says ``integer`` or
``number`` (or a number where it says ``boolean``) is a client bug, and the API's schema says so;
:class:`StrictModel` refuses it (422 naming the field) instead of guessing.
Everything else stays lax (ISO 8601 strings for datetimes, ints for floats).
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


def _wants_number(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        return bool not in args and any(_wants_number(a) for a in args)
    return False


def _wants_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args == [bool]
    return False


class StrictModel(BaseModel):
    """``extra="forbid"``, no booleans where a number is expected, and only booleans where one is."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                value = data.get(info.alias or name)
                if isinstance(value, bool) and _wants_number(info.annotation):
                    raise ValueError(f"{name}: expected a number, got {str(value).lower()}")
                if value is not None and not isinstance(value, bool) and _wants_bool(info.annotation):
                    raise ValueError(f"{name}: expected true or false, got {value!r}")
        return data
