"""The codec keeps every value an Odoo session holds, and refuses what it did not write."""

from __future__ import annotations

import datetime

import pytest

from dkn_auth.store import codec

VALUES = [
    None, True, 0, -7, 2**70, 1.5, float("inf"), "", "héllo \x00 ✓", [], {},
    [1, [2, [3]]], {"a": {"b": {"c": [1, "x", None]}}},
    datetime.datetime(2026, 12, 4, 10, 30, 1, 123456),
    datetime.datetime(2026, 12, 4, 10, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    datetime.date(2026, 12, 4), datetime.time(23, 59, 59, 1),
    {1, 2, 3}, set(), frozenset({"a"}), (1, "two", (3,)), b"\x00\xffbytes", bytearray(b"ab"),
    {1: "int key", (1, 2): "tuple key"}, {"$set": "looks like a tag"}, {"$x": 1},
    {"context": {"lang": "fr_BE", "allowed_company_ids": [1, 2]}, "when": {datetime.date(2026, 1, 1)}},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip_is_lossless(value):
    back = codec.decode(codec.encode(value))
    expected = set(value) if isinstance(value, frozenset) else value
    expected = bytes(expected) if isinstance(expected, bytearray) else expected
    assert back == expected
    assert type(back) is type(expected)


def test_encoding_is_compact_json():
    assert codec.encode({"a": [1, 2]}) == '{"a":[1,2]}'
    assert codec.encode(datetime.date(2026, 1, 2)) == '{"$date":"2026-01-02"}'


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", '{"$date": "yesterday"}', '{"$bytes": "***"}',
                                  '{"$set": [[1]]}', b"\xff\xfe", '{"$map": [[1]]}'])
def test_foreign_payload_is_refused(text):
    with pytest.raises(codec.UndecodableValue):
        codec.decode(text)


@pytest.mark.parametrize("value", [object(), {"a": {1.5j}}, lambda: 0])
def test_value_json_cannot_hold_is_refused_by_name(value):
    with pytest.raises(TypeError, match="a session cannot hold a"):
        codec.encode(value)
