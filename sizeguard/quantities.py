"""Kubernetes resource quantities as exact canonical integers.

The parser follows the grammar of Kubernetes' ``resource.Quantity``::

    quantity  ::= [sign] number [suffix]
    sign      ::= "+" | "-"
    number    ::= digits | digits "." [digits] | "." digits
    suffix    ::= binarySI | decimalSI | decimalExponent
    binarySI  ::= "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    decimalSI ::= "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
    decimalExponent ::= ("e" | "E") [sign] digits

Values are computed exactly with :class:`fractions.Fraction` (never ``float``) and rounded the
way ``Quantity.MilliValue()`` / ``Quantity.Value()`` round: up, i.e. away from zero, so a
positive value becomes ``ceil(value * 1000)`` millicores or ``ceil(value)`` bytes.

Deliberate differences from Kubernetes, all of which reject rather than guess (fail closed):
strings longer than :data:`MAX_QUANTITY_LENGTH`, a mantissa without any digit (``"."``, ``"+"``),
and results outside the signed 64-bit range (Kubernetes silently clamps those).
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from typing import Final

__all__ = [
    "INT64_MAX",
    "MAX_QUANTITY_LENGTH",
    "cpu_millicores",
    "format_cpu",
    "format_memory",
    "memory_bytes",
    "parse_quantity",
]

INT64_MAX: Final = 2**63 - 1
MAX_QUANTITY_LENGTH: Final = 64

_DECIMAL_SUFFIXES: Final[dict[str, int]] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES: Final[dict[str, int]] = {
    "Ki": 10,
    "Mi": 20,
    "Gi": 30,
    "Ti": 40,
    "Pi": 50,
    "Ei": 60,
}

# ASCII digits only: ``\d`` would also match other Unicode digits.
_QUANTITY_RE: Final = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?:(?P<int>[0-9]+)(?:\.(?P<frac>[0-9]*))?|\.(?P<frac_only>[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|[eE](?P<exp>[+-]?[0-9]+)|(?P<decimal>[numkMGTPE]))?"
)

# Decimal exponents are refused beyond +-30. Kubernetes parses the exponent as int64 and then
# truncates it to int32, so "16e-4294967296" means 16 CPUs to the API server and scheduler;
# clamping such an exponent (as a tiny value) would read it as 1m and let a huge change through
# as "unchanged". No canonical Kubernetes spelling needs an exponent this large: refusing it
# fails closed (the object cannot be approved until it is spelled normally).
_EXPONENT_BOUND: Final = 30
# Leading zeros do not count towards MAX_QUANTITY_LENGTH (Kubernetes stores "000...01" as
# written), but the whole string is still capped so that parsing stays cheap.
MAX_RAW_LENGTH: Final = 1024


def _wrong_type(value: object) -> ValueError:
    return ValueError(
        f"invalid quantity {value!r:.80}: expected a string or an integer, "
        f"got {type(value).__name__}"
    )


def parse_quantity(value: object) -> Fraction:
    """Return the exact value of a Kubernetes quantity (a string, or an ``int`` as JSON allows).

    Raises ``ValueError`` naming the value for anything that is not a valid quantity.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type(value)
    if isinstance(value, int):
        return Fraction(value)
    significant = value[1:] if value[:1] in ("+", "-") else value
    significant = significant.lstrip("0")
    if len(value) > MAX_RAW_LENGTH or len(significant) > MAX_QUANTITY_LENGTH:
        raise ValueError(
            f"invalid quantity {value[:MAX_QUANTITY_LENGTH]!r}...: longer than "
            f"{MAX_QUANTITY_LENGTH} significant characters"
        )
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid quantity {value!r}: not a Kubernetes resource quantity")
    integer = match["int"] or ""
    fraction = match["frac"] if match["int"] is not None else match["frac_only"]
    fraction = fraction or ""
    mantissa = Fraction(int(integer + fraction or "0"), 10 ** len(fraction))
    if match["sign"] == "-":
        mantissa = -mantissa
    if mantissa == 0:
        return Fraction(0)
    if match["binary"] is not None:
        return mantissa * (1 << _BINARY_SUFFIXES[match["binary"]])
    if match["exp"] is not None:
        exponent = int(match["exp"])
        if not -_EXPONENT_BOUND <= exponent <= _EXPONENT_BOUND:
            raise ValueError(
                f"invalid quantity {value!r}: decimal exponent outside +-{_EXPONENT_BOUND} "
                "(Kubernetes would wrap it to a different value)"
            )
    else:
        exponent = _DECIMAL_SUFFIXES[match["decimal"] or ""]
    scale = Fraction(10**exponent) if exponent >= 0 else Fraction(1, 10**-exponent)
    return mantissa * scale


def _round_away_from_zero(value: Fraction) -> int:
    magnitude = -((-abs(value.numerator)) // value.denominator)  # ceil(|value|)
    return magnitude if value >= 0 else -magnitude


@functools.lru_cache(maxsize=4096)
def _scaled(value: str | int, scale: int, unit: str) -> int:
    # Pure, so cached: a webhook sees the same few spellings over and over. Only values of
    # type str or int reach here (bool is rejected first), so equal keys mean equal inputs.
    result = _round_away_from_zero(parse_quantity(value) * scale)
    if not -INT64_MAX - 1 <= result <= INT64_MAX:
        raise ValueError(f"invalid quantity {value!r}: out of range as {unit}")
    return result


def _checked(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type(value)
    return value


def cpu_millicores(value: object) -> int:
    """CPU quantity as integer millicores, rounded up like ``Quantity.MilliValue()``.

    ``"250m"`` -> 250, ``"0.5"`` -> 500, ``"1"`` -> 1000, ``"1n"`` -> 1, ``2`` -> 2000.
    """
    return _scaled(_checked(value), 1000, "millicores")


def memory_bytes(value: object) -> int:
    """Memory quantity as integer bytes, rounded up like ``Quantity.Value()``.

    ``"512Mi"`` -> 536870912, ``"1G"`` -> 1000000000, ``"1.5"`` -> 2.
    """
    return _scaled(_checked(value), 1, "bytes")


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid {what} {value!r}: expected an integer")
    return value


def format_cpu(millicores: int) -> str:
    """Millicores for people: ``250`` -> ``"250m"``, ``2000`` -> ``"2"``."""
    millicores = _check_int(millicores, "millicores")
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    return f"{millicores}m"


def format_memory(num_bytes: int) -> str:
    """Bytes for people: the largest whole binary unit (``"512Mi"``, ``"1Gi"``), else bytes."""
    num_bytes = _check_int(num_bytes, "bytes")
    if num_bytes != 0:
        for suffix, power in sorted(_BINARY_SUFFIXES.items(), key=lambda item: -item[1]):
            unit = 2**power
            if num_bytes % unit == 0:
                return f"{num_bytes // unit}{suffix}"
    return str(num_bytes)
