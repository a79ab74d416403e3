"""Kubernetes quantities -> canonical integers, checked against an independent Decimal oracle."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sizeguard.quantities import (
    INT64_MAX,
    cpu_millicores,
    format_cpu,
    format_memory,
    memory_bytes,
    parse_quantity,
)

SETTINGS = settings(max_examples=200, deadline=None)

GI = 1024**3
MI = 1024**2


@pytest.mark.parametrize(
    ("text", "millicores", "num_bytes"),
    [
        ("0", 0, 0),
        ("-0", 0, 0),
        ("1", 1000, 1),
        ("0.5", 500, 1),
        (".5", 500, 1),
        ("1.", 1000, 1),
        ("+1", 1000, 1),
        ("+.5", 500, 1),
        ("007", 7000, 7),
        ("250m", 250, 1),
        ("1500m", 1500, 2),
        ("0.1m", 1, 1),
        ("1n", 1, 1),
        ("1000000n", 1, 1),
        ("1000001n", 2, 1),
        ("1u", 1, 1),
        ("2k", 2_000_000, 2000),
        ("1M", 10**9, 10**6),
        ("1G", 10**12, 10**9),
        ("1T", 10**15, 10**12),
        ("1P", 10**18, 10**15),
        ("1Ki", 1_024_000, 1024),
        ("512Mi", 512 * MI * 1000, 512 * MI),
        ("1Gi", GI * 1000, GI),
        ("1.5Gi", 1536 * MI * 1000, 1536 * MI),
        ("1Ti", 1024**4 * 1000, 1024**4),
        ("1Pi", 1024**5 * 1000, 1024**5),
        ("1e3", 10**6, 1000),
        ("1E3", 10**6, 1000),
        ("1e+3", 10**6, 1000),
        ("1E-3", 1, 1),
        ("25e-2", 250, 1),
        ("1.G", 10**12, 10**9),
        ("1.5", 1500, 2),
        ("1073741824", 1073741824000, GI),
    ],
)
def test_valid_quantities(text: str, millicores: int, num_bytes: int) -> None:
    assert cpu_millicores(text) == millicores
    assert memory_bytes(text) == num_bytes


def test_large_binary_and_exa_suffixes() -> None:
    assert memory_bytes("1Ei") == 2**60
    assert memory_bytes("1E") == 10**18
    with pytest.raises(ValueError, match="out of range"):
        cpu_millicores("1E")  # 10**21 millicores do not fit in int64


def test_rounds_up_like_kubernetes() -> None:
    assert memory_bytes("1.000000001") == 2
    assert memory_bytes("100m") == 1
    assert cpu_millicores("100001u") == 101
    # Negative values round away from zero, like Quantity.MilliValue/Value.
    assert cpu_millicores("-0.5m") == -1
    assert memory_bytes("-1.5") == -2


def test_python_int_is_accepted() -> None:
    assert cpu_millicores(2) == 2000
    assert memory_bytes(1024) == 1024
    assert memory_bytes(0) == 0


def test_extreme_exponents_are_refused_not_clamped() -> None:
    """Kubernetes truncates a decimal exponent to 32 bits: "16e-4294967296" is 16 CPUs to the
    API server and the scheduler. Reading it as a tiny value (1m) would make a huge increase
    look unchanged, so every exponent beyond +-30 is refused (fail closed)."""
    for spelling in ("16e-4294967296", "64e-4294967287", "1e-999999999", "1e999999999", "1e300"):
        with pytest.raises(ValueError, match="exponent outside"):
            cpu_millicores(spelling)
        with pytest.raises(ValueError, match="exponent outside"):
            memory_bytes(spelling)
    assert memory_bytes("0e999999999") == 0
    assert cpu_millicores("1e-30") == 1
    with pytest.raises(ValueError, match="out of range"):
        memory_bytes("1e30")


def test_leading_zeros_do_not_count_towards_the_length_limit() -> None:
    """Kubernetes stores "000...01" as written; it must stay readable (not stuck)."""
    assert cpu_millicores("0" * 200 + "1") == 1000
    assert memory_bytes("+" + "0" * 100 + "1Mi") == 1024**2
    with pytest.raises(ValueError, match="longer than"):
        memory_bytes("1" * 65)
    with pytest.raises(ValueError, match="longer than"):
        memory_bytes("0" * 2000 + "1")


def test_int64_bounds() -> None:
    assert memory_bytes(str(INT64_MAX)) == INT64_MAX
    with pytest.raises(ValueError, match="out of range"):
        memory_bytes(str(INT64_MAX + 1))
    with pytest.raises(ValueError, match="out of range"):
        memory_bytes(2**64)
    with pytest.raises(ValueError, match="out of range"):
        cpu_millicores("10P")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " ",
        "1.5.5",
        "10mi",
        "1KiB",
        "1K",
        "1kb",
        "1ki",
        "1e",
        "1e1.5",
        "e3",
        "Mi",
        ".",
        "+",
        "-",
        "+-1",
        "--1",
        " 1",
        "1 ",
        "1\n",
        "\t1",
        "1_000",
        "1,5",
        "0x10",
        "inf",
        "NaN",
        "١",  # an Arabic-Indic digit: \d would accept it
        "１",  # a full-width digit
        "1" * 65,
    ],
)
def test_invalid_strings_are_rejected_naming_the_value(bad: str) -> None:
    for parse in (cpu_millicores, memory_bytes):
        with pytest.raises(ValueError) as info:
            parse(bad)
        assert repr(bad[:64]) in str(info.value)


@pytest.mark.parametrize("bad", [1.5, 0.5, True, False, None, b"1", [1], {"cpu": 1}, Decimal(1)])
def test_non_strings_other_than_int_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        cpu_millicores(bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError):
        memory_bytes(bad)


def test_parse_quantity_is_exact() -> None:
    assert parse_quantity("0.1") * 10 == 1  # a float would not be exact
    assert parse_quantity("1Ki") == 1024


@pytest.mark.parametrize(
    ("millicores", "text"),
    [
        (0, "0"),
        (1, "1m"),
        (250, "250m"),
        (1000, "1"),
        (1500, "1500m"),
        (2000, "2"),
        (-500, "-500m"),
    ],
)
def test_format_cpu(millicores: int, text: str) -> None:
    assert format_cpu(millicores) == text


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0"),
        (1, "1"),
        (1000, "1000"),
        (1024, "1Ki"),
        (1536, "1536"),  # 1.5Ki: not a whole number of any binary unit
        (3072, "3Ki"),
        (512 * MI, "512Mi"),
        (GI, "1Gi"),
        (1536 * MI, "1536Mi"),
        (10**9, "1000000000"),
        (2**60, "1Ei"),
        (2**61, "2Ei"),
        (-(2**20), "-1Mi"),
        (123456789, "123456789"),
    ],
)
def test_format_memory(num_bytes: int, text: str) -> None:
    assert format_memory(num_bytes) == text
    assert memory_bytes(text) == num_bytes


@pytest.mark.parametrize("bad", [1.0, True, "1", None])
def test_format_rejects_non_integers(bad: object) -> None:
    with pytest.raises(ValueError):
        format_cpu(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        format_memory(bad)  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------

_SUFFIX_EXPONENTS = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
}


@st.composite
def quantity_spellings(draw: st.DrawFn) -> tuple[str, Decimal]:
    sign = draw(st.sampled_from(["", "+", "-"]))
    integer = draw(st.text("0123456789", max_size=6))
    fraction = draw(st.one_of(st.none(), st.text("0123456789", max_size=6)))
    if not integer and not fraction:
        integer = "0"
    number = integer if fraction is None else f"{integer}.{fraction}"
    value = Decimal(f"{sign}{integer or '0'}.{fraction or '0'}")
    if draw(st.booleans()):
        exponent = draw(st.integers(-12, 9))
        letter = draw(st.sampled_from(["e", "E"]))
        exp_sign = "+" if exponent >= 0 and draw(st.booleans()) else ""
        return f"{sign}{number}{letter}{exp_sign}{exponent}", value.scaleb(exponent)
    suffix = draw(st.sampled_from(sorted(_SUFFIX_EXPONENTS)))
    return f"{sign}{number}{suffix}", value * _SUFFIX_EXPONENTS[suffix]


def _oracle(value: Decimal) -> int:
    with decimal.localcontext() as context:
        context.prec = 200
        return int(value.to_integral_value(rounding=decimal.ROUND_UP))  # away from zero


@SETTINGS
@given(quantity_spellings())
def test_matches_decimal_oracle(case: tuple[str, Decimal]) -> None:
    text, value = case
    with decimal.localcontext() as context:
        context.prec = 200
        assert cpu_millicores(text) == _oracle(value * 1000)
        assert memory_bytes(text) == _oracle(value)


@SETTINGS
@given(st.integers(min_value=0, max_value=2**53))
def test_spellings_agree(number: int) -> None:
    assert cpu_millicores(f"{number}m") == number
    assert cpu_millicores(str(Decimal(number).scaleb(-3))) == number
    assert cpu_millicores(f"{number}e-3") == number
    assert memory_bytes(number) == memory_bytes(str(number)) == number
    assert memory_bytes(f"{number * 1000}m") == number


@SETTINGS
@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_format_round_trips(number: int) -> None:
    assert cpu_millicores(format_cpu(number)) == number
    assert memory_bytes(format_memory(number)) == number


@SETTINGS
@given(st.text(max_size=12))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    try:
        cpu_millicores(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
