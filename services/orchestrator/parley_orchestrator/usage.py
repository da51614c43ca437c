"""What one call used of each provider, and what that cost: ``parley usage``.

Every service reports what it billed on the session's events (``Usage``:
ASR ``audio_s``, TTS ``characters``, LLM ``input_tokens`` /
``output_tokens``, per provider); the reducer only notes them, so they are
in the session's log. This module sums them (pure) and prices them with the
deployer's table: a JSON file, or inline text, given as ``--prices`` or
``PARLEY_PRICES``:

    {"deepgram": {"audio_s": 0.0000717}, "cartesia": {"characters": 0.000038},
     "gpt-4o-mini": {"input_tokens": 1.5e-7, "output_tokens": 6e-7}}
    deepgram.audio_s=0.0000717,cartesia.characters=0.000038

Prices are the deployer's (per unit, in their currency); Parley ships none,
because vendors change them. A provider or unit with no price shows its
quantity and "no price".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from parley import contract

Prices = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Line:
    service: str
    provider: str
    unit: str
    amount: float
    price: float | None  # per unit; None: not in the table

    @property
    def cost(self) -> float | None:
        return None if self.price is None else self.amount * self.price


def totals(steps: Iterable[contract.Step]) -> list[Line]:
    """Usage events of a session's log, summed per (service, provider, unit); unpriced."""
    sums: dict[tuple[str, str, str], float] = {}
    for step in steps:
        e = step.event
        if isinstance(e, contract.Usage) and e.amount > 0:
            key = (e.service, e.provider, e.unit)
            sums[key] = sums.get(key, 0.0) + e.amount
    return [Line(s, p, u, a, None) for (s, p, u), a in sorted(sums.items())]


def priced(lines: list[Line], prices: Prices) -> list[Line]:
    return [Line(l.service, l.provider, l.unit, l.amount, prices.get(l.provider, {}).get(l.unit)) for l in lines]


def parse_prices(text: str) -> Prices:
    """A price table from a JSON file's path, JSON text, or ``provider.unit=price,...``.

    Raises ValueError naming what is wrong."""
    text = text.strip()
    if not text:
        return {}
    if not text.startswith("{") and "=" not in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"prices: {text!r} is neither a file nor provider.unit=price,...")
        text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"prices: not JSON ({exc})") from None
        out: Prices = {}
        for provider, units in data.items():
            if not isinstance(units, dict):
                raise ValueError(f"prices: {provider} must map units to prices")
            for unit, price in units.items():
                if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
                    raise ValueError(f"prices: {provider}.{unit} must be a number, 0 or more, not {price!r}")
                out.setdefault(provider, {})[unit] = float(price)
        return out
    out = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        provider, dot, unit = name.partition(".")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not sep or not dot or not provider or not unit or price < 0:
            raise ValueError(f"prices: {item.strip()!r} must be provider.unit=price (a number, 0 or more)")
        out.setdefault(provider, {})[unit] = price
    return out


def render(session: str, lines: list[Line]) -> str:
    if not lines:
        return f"session {session}: no provider usage recorded"
    rows = [f"session {session}", f"{'service':<8} {'provider':<24} {'unit':<14} {'amount':>12} {'price/unit':>12} {'cost':>10}"]
    total, unpriced = 0.0, 0
    for l in lines:
        amount = f"{l.amount:,.3f}".rstrip("0").rstrip(".")
        if l.cost is None:
            unpriced += 1
            rows.append(f"{l.service:<8} {l.provider:<24} {l.unit:<14} {amount:>12} {'no price':>12} {'-':>10}")
        else:
            total += l.cost
            rows.append(f"{l.service:<8} {l.provider:<24} {l.unit:<14} {amount:>12} {l.price:>12.8g} {l.cost:>10.5f}")
    note = f" ({unpriced} line{'s' if unpriced != 1 else ''} without a price)" if unpriced else ""
    rows.append(f"estimated cost: {total:.5f}{note}")
    return "\n".join(rows)
