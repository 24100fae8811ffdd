"""core.events: the shared event schema; bad lines are refused with file:line and the reason."""
from __future__ import annotations

import json

import pytest

from core.events import KINDS, Event, EventFormatError, event_from_dict, parse_lines


def test_round_trip_every_kind():
    for kind in sorted(KINDS):
        e = Event(t=1.5, kind=kind, pool="p", cloud="c", vm="v", user="u", details={"k": 1})
        assert event_from_dict(json.loads(e.to_json())) == e


@pytest.mark.parametrize("d, expected", [
    ({"t": 3, "kind": "request"}, Event(3.0, "request")),
    ({"t": 0.5, "kind": "launch", "pool": None, "details": None}, Event(0.5, "launch")),
    ({"t": 1, "kind": "assign", "vm": "v", "user": "u", "details": {"wait_s": 2}},
     Event(1.0, "assign", vm="v", user="u", details={"wait_s": 2})),
])
def test_event_from_dict_accepts(d, expected):
    assert event_from_dict(d) == expected


@pytest.mark.parametrize("d, reason", [
    ([1, 2], "expected a JSON object, got list"),
    ({"t": 1, "kind": "request", "colour": "red"}, "unknown field(s) ['colour']"),
    ({"kind": "request"}, "field 't' must be a number"),
    ({"t": "1", "kind": "request"}, "field 't' must be a number"),
    ({"t": True, "kind": "request"}, "field 't' must be a number"),
    ({"t": 1, "kind": "explode"}, "field 'kind' is 'explode'"),
    ({"t": 1}, "field 'kind' is None"),
    ({"t": 1, "kind": "request", "pool": 3}, "field 'pool' must be a string or null"),
    ({"t": 1, "kind": "request", "user": ["u"]}, "field 'user' must be a string or null"),
    ({"t": 1, "kind": "request", "details": [1]}, "field 'details' must be an object"),
    ({"t": 1, "kind": "request", "details": []}, "field 'details' must be an object"),  # falsy, still wrong
    ({"t": 1, "kind": "request", "details": ""}, "field 'details' must be an object"),
    ({"t": float("nan"), "kind": "request"}, "field 't' must be a number"),
    ({"t": float("inf"), "kind": "request"}, "field 't' must be a number"),
])
def test_event_from_dict_rejects(d, reason):
    with pytest.raises(EventFormatError) as e:
        event_from_dict(d, where="log.jsonl:7")
    assert str(e.value).startswith("log.jsonl:7: ") and reason in str(e.value)


def test_parse_lines_skips_blank_lines_and_numbers_from_one():
    lines = ['{"t": 1, "kind": "request"}\n', "\n", '  {"t": 2, "kind": "release", "vm": "v"}  \n']
    assert parse_lines(lines, source="u.jsonl") == [Event(1.0, "request"), Event(2.0, "release", vm="v")]


@pytest.mark.parametrize("lines, message", [
    (['{"t": 1, "kind": "request"}', "{not json"], "u.jsonl:2: not JSON"),
    (["", '{"t": 1, "kind": "nope"}'], "u.jsonl:2: field 'kind'"),
    (['"just a string"'], "u.jsonl:1: expected a JSON object"),
    (['{"t": NaN, "kind": "request"}'], "u.jsonl:1: field 't'"),  # json.loads accepts NaN
])
def test_parse_lines_rejects_with_file_and_line(lines, message):
    with pytest.raises(EventFormatError, match="^" + message.replace("(", r"\(")):
        parse_lines(lines, source="u.jsonl")
