"""What tokens cost: the shipped price table (semcached/data/prices.toml) with the config
file's [prices."<model>"] tables over it, and the arithmetic.

A model with no price is never silently free: ``price`` returns None, the caller records
the cost as unknown, and the server warns once per model.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from semcached.config import ConfigError

SHIPPED = Path(__file__).parent / "data" / "prices.toml"
log = logging.getLogger("semcached.pricing")
# When a request sets no max_tokens, a budget reserves this many output tokens for it.
RESERVED_OUTPUT_TOKENS = 512


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float = -1.0  # -1: as input
    batch_input: float = -1.0
    batch_output: float = -1.0

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        if batch:
            return (prompt_tokens * _or(self.batch_input, self.input)
                    + completion_tokens * _or(self.batch_output, self.output)) / 1e6
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


def _or(value: float, default: float) -> float:
    return default if value < 0 else value


class Prices:
    def __init__(self, table: dict[str, Price], taken: str) -> None:
        self.table = table
        self.taken = taken
        self._warned: set[str] = set()

    @classmethod
    def load(cls, overrides: dict[str, dict[str, Any]] | None = None, path: Path = SHIPPED) -> Prices:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        table = {name: _price(name, values, str(path)) for name, values in data["models"].items()}
        for name, values in (overrides or {}).items():
            table[name] = _price(name, values, "config [prices]")
        return cls(table, str(data.get("taken", "")))

    def price(self, model: str) -> Price | None:
        """The price of "<provider>/<model>" or a bare model name, or None (warned once)."""
        found = self._match(model)
        if found is None and model and model not in self._warned:
            self._warned.add(model)
            log.warning("no price for model %r: its cost is recorded as unknown; add "
                        "[prices.%r] with input and output (USD per 1M tokens) to the config", model, model)
        return found

    def _match(self, model: str) -> Price | None:
        bare = model.split("/", 1)[1] if "/" in model else model
        for name in (model, bare):
            if name in self.table:
                return self.table[name]
        best = ""
        for key in self.table:
            for name in (model, bare):
                if name.startswith(key + "-") and len(key) > len(best):
                    best = key
        return self.table[best] if best else None


def _price(name: str, values: Any, where: str) -> Price:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: prices.{name} must be a table")
    known = {f.name for f in fields(Price)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: prices.{name}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(known))}")
    for key in ("input", "output"):
        if key not in values:
            raise ConfigError(f"{where}: prices.{name} needs {key} (USD per 1M tokens)")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}: prices.{name}.{key} must be a non-negative number")
    return Price(**{k: float(v) for k, v in values.items()})


def estimate_tokens(text: str) -> int:
    """Tokens of a text when the provider reported none: about 4 characters a token
    (OpenAI's published rule of thumb for English), at least 1 for non-empty text."""
    return max(1, round(len(text) / 4)) if text else 0
