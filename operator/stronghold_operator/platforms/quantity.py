"""Kubernetes quantities ("250m", "64Mi", "12345678n", "1e3") as floats.

lightkube's ``parse_quantity`` rounds to thousandths and knows no "n" or "u", which the
resource metrics API uses for CPU (nanocores), so the operator parses them itself.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+))(.*)")
_EXPONENT = re.compile(r"[eE]([+-]?\d+)")
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SI = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def parse_quantity(value: object) -> float:
    """A quantity in its base unit (cores or bytes); raises ``ValueError`` for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _NUMBER.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(match[1])
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from None
    suffix = match[2]
    if suffix in _BINARY_SI:
        return float(number * 2 ** _BINARY_SI[suffix])
    if suffix in _DECIMAL_SI:
        return float(number.scaleb(_DECIMAL_SI[suffix]))
    exponent = _EXPONENT.fullmatch(suffix)
    if exponent is not None:
        return float(number.scaleb(int(exponent[1])))
    raise ValueError(f"not a Kubernetes quantity: {value!r} (suffix {suffix!r})")
