"""How JSON values become DynamoDB attributes, and what DynamoDB counts of an item."""

from __future__ import annotations

from typing import Any

from kernel.errors import InvalidRecord
from kernel.handlers import Item

MAX_ITEM_BYTES = 400 * 1024
MAX_NUMBER = 1e126  # DynamoDB numbers: magnitude below 1E+126 …
MIN_NUMBER = 1e-130  # … and at least 1E-130 (or zero)
MAX_NAME_CHARS = 16_384  # 64 KB as UTF-8 in the worst case; longer names are refused


class ExactNumber:
    """A JSON number kept as its literal text, where a float would lose digits."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExactNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"ExactNumber({self.text!r})"


NUMBER_TYPES = (int, float, ExactNumber)


def is_number(value: Any) -> bool:
    return isinstance(value, NUMBER_TYPES) and not isinstance(value, bool)


def attribute(value: Any) -> dict[str, Any]:
    """A decoded JSON value as a DynamoDB attribute value."""
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):  # before int: bool is an int subclass
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if value != 0 and not MIN_NUMBER <= abs(value) < MAX_NUMBER:
            raise InvalidRecord("number_out_of_range", f"{value!r} is outside DynamoDB's range")
        return {"N": repr(value)}
    if isinstance(value, ExactNumber):
        return {"N": value.text}
    if value is None:
        return {"NULL": True}
    if isinstance(value, list):
        return {"L": [attribute(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {attribute_name(k): attribute(v) for k, v in value.items()}}
    raise InvalidRecord("wrong_type", f"unsupported value {type(value).__name__}")


def attribute_name(name: str) -> str:
    """DynamoDB refuses empty attribute names (and names over 64 KB)."""
    if not name or len(name) > MAX_NAME_CHARS:
        raise InvalidRecord("bad_attribute_name", f"attribute name of {len(name)} characters")
    return name


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one attribute value (names of nested maps included)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return len(inner) // 2 + 2  # DynamoDB stores ~1 byte per 2 significant digits + 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + attribute_size(v) for k, v in inner.items())
    return len(str(inner))


def item_size(item: Item) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())
