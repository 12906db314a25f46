"""Input checks run before anything is enqueued: every rule, and messages that never echo a value.

Every offending value below carries ``CANARY`` so a message that quotes it fails the test.
"""

from __future__ import annotations

import enum
import json
import math
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from cioguard.errors import CioguardError, InvalidInputError, InvalidTypeError
from cioguard.producer import validate

CANARY = "CANARY"


class Opaque:
    """A value that is not JSON data and whose repr would leak the canary."""

    def __repr__(self) -> str:
        return f"Opaque({CANARY})"

    __str__ = __repr__


def message_of(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(excinfo.value)
    assert CANARY not in text, text
    assert CANARY.lower() not in text.lower(), text
    return text


def test_errors_are_value_and_type_errors_under_the_cioguard_root() -> None:
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(InvalidInputError, CioguardError)
    assert issubclass(InvalidTypeError, TypeError)
    assert issubclass(InvalidTypeError, CioguardError)


# -- person id -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["user-42", "a", "x" * 150, "é" * 75, "a b", "cio_123", "中文"])
def test_person_id_accepts_ids_up_to_150_bytes(value: str) -> None:
    assert validate.person_id(value) == value


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(None, "NoneType"), (4.2, "float"), (True, "bool"), (b"CANARY", "bytes"),
     (["CANARY"], "list"), (Opaque(), "Opaque")],
)  # fmt: skip
def test_person_id_must_be_a_str_or_an_int(value: object, type_name: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.person_id(value)
    assert message_of(caught) == f"person_id must be a str or an int, not {type_name}"


@pytest.mark.parametrize(
    ("value", "expected"), [(42, "42"), (0, "0"), (-7, "-7"), (10**30, "1" + "0" * 30)]
)
def test_an_int_person_id_is_its_decimal_string(value: int, expected: str) -> None:
    assert validate.person_id(value) == expected
    assert type(validate.person_id(value)) is str


def test_an_int_enum_person_id_is_refused_not_sent_as_a_name() -> None:
    class Ids(enum.IntEnum):
        ADMIN = 1

    with pytest.raises(InvalidTypeError, match=r"^person_id must be a str or an int, not Ids$"):
        validate.person_id(Ids.ADMIN)


@pytest.mark.parametrize("value", ["", " ", "\t\n", "\u3000"])
def test_person_id_must_not_be_empty(value: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.person_id(value)
    assert message_of(caught) == "person_id is empty"


@pytest.mark.parametrize("value", [" CANARY", "CANARY ", "CANARY\n", "\tCANARY", "\u00a0CANARY"])
def test_person_id_must_not_have_surrounding_whitespace(value: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.person_id(value)
    assert message_of(caught) == "person_id has leading or trailing whitespace"


@pytest.mark.parametrize(
    "value",
    [CANARY + "x" * 145, CANARY + "é" * 73],  # 151 bytes; 79 characters but 152 bytes
)
def test_person_id_over_150_bytes_is_refused(value: str) -> None:
    assert len(value.encode("utf-8")) > validate.MAX_ID_BYTES
    with pytest.raises(InvalidInputError) as caught:
        validate.person_id(value)
    assert message_of(caught) == "person_id is longer than 150 bytes"


def test_person_id_with_a_lone_surrogate_is_an_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        validate.person_id(CANARY + "\ud800")


# -- attributes ----------------------------------------------------------------------------------


def test_attributes_returns_a_plain_dict_copy() -> None:
    from types import MappingProxyType

    source = {"plan": "pro", "nested": {"a": [1, 2.5, None, True]}}
    out = validate.attributes(MappingProxyType(source))
    assert out == source
    assert type(out) is dict
    assert out is not source


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(["CANARY"], "list"), ("CANARY", "str"), (None, "NoneType"), (42, "int"),
     ({"CANARY"}, "set"), ((("k", "CANARY"),), "tuple")],
)  # fmt: skip
def test_attributes_must_be_a_mapping(value: object, type_name: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.attributes(value)
    assert message_of(caught) == f"attributes must be a mapping, not {type_name}"


@pytest.mark.parametrize(
    ("key", "type_name"), [(1, "int"), (None, "NoneType"), (("CANARY",), "tuple"), (b"k", "bytes")]
)
def test_attribute_keys_must_be_str(key: object, type_name: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.attributes({"plan": "pro", key: "CANARY"})
    assert message_of(caught) == f"attributes keys must be str, found a {type_name} key"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Opaque(), "Opaque"),
        ({"CANARY"}, "set"),
        (b"CANARY", "bytes"),
        (timedelta(seconds=1), "timedelta"),
        ({"deep": {"deeper": [1, "ok", Opaque()]}}, "Opaque"),  # nested in mappings and lists
        ([1, [2, [3, {CANARY}]]], "set"),
        ((1, (2, b"CANARY")), "bytes"),
    ],
)
def test_values_must_be_json_serializable_at_any_depth(value: object, type_name: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.attributes({"profile": value})
    assert message_of(caught).startswith(
        f"attributes contains a value that is not JSON-serializable ({type_name}) at profile"
    )


@pytest.mark.parametrize(
    ("value", "where"),
    [(Opaque(), "profile"), ({"deep": {"deeper": [1, "ok", Opaque()]}}, "profile.deep.deeper[2]"),
     ([1, [2, [3, {CANARY}]]], "profile[1][1][1]")],
)  # fmt: skip
def test_the_message_names_the_key_path_of_a_bad_value(value: object, where: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.attributes({"profile": value})
    assert message_of(caught).endswith(f" at {where}")


class Plan(enum.Enum):
    PRO = "pro"
    NESTED = Decimal("0.1")


class Level(enum.IntEnum):
    GOLD = 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), 1_704_067_200),
        (datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), 1_704_067_200),
        (datetime(2024, 1, 1), 1_704_067_200),  # naive is UTC
        (datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC), 1_704_067_200),  # floored
        (date(2024, 1, 1), 1_704_067_200),  # midnight UTC
        (date(1960, 1, 1), -315_619_200),  # birthdays before 1970 are negative seconds
        (Decimal("19.5"), 19.5),
        (Decimal("10"), 10),
        (Decimal("-0.25"), -0.25),
        (Decimal("0.1"), "0.1"),  # the float 0.1 is not 0.1: the string, not a rounded number
        (Decimal("12345678901234567890.01"), "12345678901234567890.01"),
        (Decimal(2**60 + 1), str(2**60 + 1)),  # beyond a float's exact integers
        (UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (Plan.PRO, "pro"),
        (Plan.NESTED, "0.1"),  # the value, converted in turn
        (Level.GOLD, 3),
        ((1, (2, 3)), [1, [2, 3]]),
        ({"when": date(2024, 1, 1), "ids": (UUID(int=1),)},
         {"when": 1_704_067_200, "ids": ["00000000-0000-0000-0000-000000000001"]}),
    ],
)  # fmt: skip
def test_ordinary_python_values_become_customerio_conventions(
    value: object, expected: object
) -> None:
    out = validate.attributes({"v": value})["v"]
    assert out == expected
    assert type(out) is type(expected)
    json.dumps(out, allow_nan=False)


def test_naive_datetime_attribute_is_utc_not_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert validate.attributes({"at": datetime(2024, 1, 1)}) == {"at": 1_704_067_200}
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_a_non_finite_decimal_is_refused_like_nan(value: Decimal) -> None:
    with pytest.raises(InvalidInputError, match=r"NaN or Infinity"):
        validate.attributes({"score": value})


def test_the_callers_mapping_is_not_changed() -> None:
    source = {"when": date(2024, 1, 1), "nested": {"id": UUID(int=2)}}
    validate.attributes(source)
    assert source == {"when": date(2024, 1, 1), "nested": {"id": UUID(int=2)}}


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, {"score": math.nan}, [1.0, math.inf], {"a": [{"b": math.nan}]}],
)
def test_nan_and_infinity_are_refused_at_any_depth(value: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.attributes({"score": value})
    assert str(caught.value) == "attributes contains NaN or Infinity, which JSON cannot carry"


def test_json_data_of_every_kind_passes() -> None:
    data: dict[str, Any] = {
        "s": "text", "i": 10**20, "f": 1.5, "t": True, "n": None, "l": [1, "a", None],
        "tuple": (1, 2), "m": {"nested": {"deeper": [{"x": 1}]}}, "empty": {}, "e": "🎉",
    }  # fmt: skip
    assert validate.attributes(data) == {**data, "tuple": [1, 2]}


def test_what_names_the_argument_in_messages() -> None:
    with pytest.raises(InvalidTypeError, match=r"^event data must be a mapping, not list$"):
        validate.attributes([1], what="event data")


def test_circular_reference_is_not_reported_as_nan() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(CioguardError) as caught:
        validate.attributes({"profile": loop})
    assert "NaN" not in str(caught.value)


def test_nested_tuple_key_is_named_in_the_message() -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.attributes({"profile": {("a", "b"): 1}})
    assert "()" not in str(caught.value)


# -- event name ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["signed_up", "Order Completed", "x" * 100, "é" * 50])
def test_event_name_accepts_names_up_to_100_bytes(value: str) -> None:
    assert validate.event_name(value) == value


@pytest.mark.parametrize(("value", "type_name"), [(None, "NoneType"), (1, "int"), (b"x", "bytes")])
def test_event_name_must_be_a_str(value: object, type_name: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.event_name(value)
    assert message_of(caught) == f"event name must be a str, not {type_name}"


@pytest.mark.parametrize("value", ["", " ", "\n\t"])
def test_event_name_must_not_be_empty(value: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.event_name(value)
    assert message_of(caught) == "event name is empty"


@pytest.mark.parametrize("value", [CANARY + "x" * 95, CANARY + "é" * 48])  # 101 and 102 bytes
def test_event_name_over_100_bytes_is_refused(value: str) -> None:
    assert len(value.encode("utf-8")) > validate.MAX_EVENT_NAME_BYTES
    with pytest.raises(InvalidInputError) as caught:
        validate.event_name(value)
    assert message_of(caught) == "event name is longer than 100 bytes"


# -- event data ----------------------------------------------------------------------------------


def test_event_data_none_is_an_empty_mapping() -> None:
    assert validate.event_data(None) == {}


def test_event_data_at_exactly_100000_bytes_passes() -> None:
    filler = "x" * (validate.MAX_EVENT_DATA_BYTES - len('{"body":""}'))
    data = {"body": filler}
    assert validate.encoded_size(data, what="event data") == validate.MAX_EVENT_DATA_BYTES
    assert validate.event_data(data) == data


@pytest.mark.parametrize(
    "data",
    [
        {"body": CANARY + "x" * 100_000},
        {"body": CANARY + "é" * 50_000},  # 50,006 characters, over 100,000 bytes
        {"items": [{"sku": CANARY + "x" * 1000}] * 100},
    ],
)
def test_event_data_over_100000_bytes_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.event_data(data)
    assert message_of(caught) == "event data is larger than 100000 bytes as JSON"


def test_event_data_applies_the_attribute_checks() -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.event_data(["CANARY"])
    assert message_of(caught) == "event data must be a mapping, not list"
    with pytest.raises(InvalidTypeError, match=r"^event data keys must be str"):
        validate.event_data({1: "CANARY"})
    with pytest.raises(InvalidTypeError, match=r"^event data contains a value .*\(Opaque\) at x$"):
        validate.event_data({"x": Opaque()})
    with pytest.raises(InvalidInputError, match=r"^event data contains NaN"):
        validate.event_data({"x": math.nan})


# -- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1_700_000_000, 1_700_000_000),
        (9_999_999_999, 9_999_999_999),  # year 2286: still seconds
        (datetime(2024, 1, 1, tzinfo=UTC), 1_704_067_200),
        (datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), 1_704_067_200),
        (datetime(2024, 1, 1), 1_704_067_200),  # naive means UTC, whatever the local zone
        (datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC), 1_704_067_200),  # floored
        (datetime(1970, 1, 1), 0),
    ],
)
def test_timestamp_accepts_unix_seconds_and_datetimes(value: object, expected: int | None) -> None:
    result = validate.timestamp(value)
    assert result == expected
    assert type(result) is int


def test_no_timestamp_means_the_time_of_the_call() -> None:
    assert validate.timestamp(None, now=lambda: 1_700_000_123.9) == 1_700_000_123


@pytest.mark.parametrize(
    "value", [1_700_000_000_000, 1_700_000_000_000_000, 10_000_000_000, datetime(2290, 1, 1)]
)
def test_millisecond_timestamps_are_refused_with_a_message_that_says_so(value: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.timestamp(value)
    assert str(caught.value) == (
        "timestamp looks like milliseconds (or a finer unit): Customer.io takes whole Unix "
        "seconds, divide by 1000"
    )
    assert str(value) not in str(caught.value)


@pytest.mark.parametrize("name", ["created_at", "_timestamp"])
def test_timestamp_attributes_become_whole_unix_seconds(name: str) -> None:
    attributes = {name: datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC), "plan": "pro"}
    converted = validate.timestamp_attributes(attributes)
    assert converted == {name: 1_704_067_200, "plan": "pro"}
    assert attributes[name] != 1_704_067_200  # the caller's mapping is not changed
    assert validate.timestamp_attributes({name: 1_704_067_200}) == {name: 1_704_067_200}


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (1.7e9, InvalidTypeError, "created_at must be an int or a datetime, not float"),
        ("1700000000", InvalidTypeError, "created_at must be an int or a datetime, not str"),
        ("2024-01-01", InvalidTypeError, "created_at must be an int or a datetime, not str"),
        (None, InvalidTypeError, "created_at must be an int or a datetime, not NoneType"),
        (True, InvalidTypeError, "created_at must be an int or a datetime, not bool"),
        (-5, InvalidInputError, "created_at is negative"),
        (1_700_000_000_000, InvalidInputError, "created_at looks like milliseconds (or a finer "
         "unit): Customer.io takes whole Unix seconds, divide by 1000"),
    ],
)  # fmt: skip
def test_created_at_that_is_not_whole_seconds_is_refused(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        validate.timestamp_attributes({"created_at": value})
    assert str(caught.value) == message


def test_attributes_without_timestamps_pass_through_untouched() -> None:
    attributes = {"plan": "pro"}
    assert validate.timestamp_attributes(attributes) is attributes
    assert validate.timestamp_attributes(["not", "a", "mapping"]) == ["not", "a", "mapping"]


def test_naive_datetime_is_read_as_utc_not_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert validate.timestamp(datetime(2024, 1, 1)) == 1_704_067_200
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(True, "bool"), (False, "bool"), (1.5, "float"), ("1700000000", "str"),
     (Decimal(1), "Decimal")],
)  # fmt: skip
def test_timestamp_of_another_type_is_refused(value: object, type_name: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        validate.timestamp(value)
    assert str(caught.value) == f"timestamp must be an int or a datetime, not {type_name}"


@pytest.mark.parametrize("value", [-1, -1_700_000_000, datetime(1969, 12, 31, 23, 59, 59)])
def test_negative_timestamp_is_refused(value: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.timestamp(value)
    assert str(caught.value) == "timestamp is negative"


# -- deletion reason -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("erasure", "erasure"), (" ccpa ", "ccpa")])
def test_reason_is_stripped(value: str, expected: str) -> None:
    assert validate.reason(value) == expected


@pytest.mark.parametrize("value", ["", "  ", CANARY + "x" * 60])
def test_reason_must_be_1_to_32_characters(value: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate.reason(value)
    assert message_of(caught) == "reason must be 1-32 characters"


def test_reason_must_be_a_str() -> None:
    with pytest.raises(InvalidTypeError, match=r"^reason must be a str, not int$"):
        validate.reason(1)
