"""JSON codec for session values: lossless for what Odoo sessions hold, and never pickle.

Plain JSON covers str, int, float, bool, None, lists and dicts with string keys. Other values
are written as one-key objects whose key starts with ``$``:

=================  ===========================================
``$datetime``      ISO 8601, offset kept for aware datetimes
``$date``          ISO 8601
``$time``          ISO 8601
``$set``           list of members (frozensets come back as sets)
``$tuple``         list of items
``$bytes``         base64
``$map``           list of [key, value] pairs: a dict with non-string keys,
                   or one whose only key starts with ``$``
=================  ===========================================
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any


class UndecodableValue(ValueError):
    """A stored value is not JSON this codec wrote."""


def _plain_dict(value: dict) -> bool:
    if not all(isinstance(key, str) for key in value):
        return False
    return not (len(value) == 1 and next(iter(value)).startswith("$"))


def _tagged(value: Any) -> Any:
    """Turn a value into one json.dumps accepts, tagging what JSON lacks."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        return [_tagged(item) for item in value]
    if isinstance(value, dict):
        if _plain_dict(value):
            return {key: _tagged(item) for key, item in value.items()}
        return {"$map": [[_tagged(key), _tagged(item)] for key, item in value.items()]}
    # datetime before date: a datetime is a date.
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"$time": value.isoformat()}
    if isinstance(value, (set, frozenset)):
        return {"$set": [_tagged(item) for item in value]}
    if isinstance(value, tuple):
        return {"$tuple": [_tagged(item) for item in value]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"a session cannot hold a {type(value).__name__}")


_UNTAG = {
    "$datetime": datetime.datetime.fromisoformat,
    "$date": datetime.date.fromisoformat,
    "$time": datetime.time.fromisoformat,
    "$set": set,
    "$tuple": tuple,
    "$bytes": lambda text: base64.b64decode(text, validate=True),
    "$map": lambda pairs: {key: item for key, item in pairs},
}


def _untag(obj: dict) -> Any:
    if len(obj) == 1:
        key, value = next(iter(obj.items()))
        untag = _UNTAG.get(key)
        if untag is not None:
            return untag(value)
    return obj


def encode(value: Any) -> str:
    """One value as compact JSON text."""
    return json.dumps(_tagged(value), ensure_ascii=False, separators=(",", ":"))


def decode(text: str | bytes) -> Any:
    """The value ``encode`` wrote; UndecodableValue for anything else."""
    try:
        if isinstance(text, str) and '"$' not in text:  # no tag in it: skip the per-object hook
            return json.loads(text)
        return json.loads(text, object_hook=_untag)
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError, bad tag payloads
        raise UndecodableValue(str(exc)) from None

