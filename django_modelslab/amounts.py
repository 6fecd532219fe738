"""Money amounts (credits or a currency) as :class:`~decimal.Decimal`, from loose input.

Shared by the client (a cost in a ModelsLab answer), the settings checks (``PRICES``, the
budgets) and :mod:`django_modelslab.costs`. Imports nothing of Django.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

#: The precision of ``GenerationRequest.cost`` (``decimal_places=6``).
QUANTUM = Decimal("0.000001")
#: The largest amount ``GenerationRequest.cost`` and ``Charge.amount`` hold (``max_digits=12``).
MAX_AMOUNT = Decimal("999999.999999")
CENT = Decimal("0.01")


def parse_amount(value: Any) -> Decimal | None:
    """A finite amount >= 0 from an int, float, Decimal or numeric string; else None.

    Booleans, NaN, infinities, negative numbers and anything else give None.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
    elif not isinstance(value, int | float | Decimal):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return amount


def format_amount(amount: Decimal) -> str:
    """``4.2`` -> ``"4.20"``; finer amounts keep their digits (``0.0047``)."""
    if amount == amount.quantize(CENT):
        return f"{amount.quantize(CENT)}"
    return format(amount.quantize(QUANTUM).normalize(), "f")
