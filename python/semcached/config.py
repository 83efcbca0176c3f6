"""Server configuration: embedded defaults < TOML file < SEMCACHED_* environment < CLI flags.

Every key lives in one section; its environment override is
``SEMCACHED_<SECTION>_<KEY>`` in upper case (``SEMCACHED_CACHE_MIN_SIMILARITY=0.92``).
Unknown keys and values of the wrong type are errors that name the key, never ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Something a person must fix before the server can start (a config key, a busy or
    damaged data directory, a missing model); the message says what and how."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: str = "./semcached-data"
    # Seconds in-flight RPCs get to finish on SIGTERM/SIGINT.
    shutdown_grace_seconds: float = 10.0
    log_level: str = "info"
    # Prometheus metrics over HTTP on this port (same host); 0: off.
    metrics_port: int = 0
    # The asyncio loop the server runs on: uvloop answers ~10% more exact hits a second
    # than asyncio's own.
    event_loop: str = "uvloop"


@dataclass
class CacheConfig:
    # 0: entries never expire unless a request sets ttl_seconds.
    default_ttl_seconds: int = 7 * 24 * 3600
    max_entries: int = 1_000_000
    # Bytes accounted to entries (strings, vector, a fixed overhead each); 0: unbounded.
    max_bytes: int = 2 * 1024**3
    # Bounds of each namespace (with Complete's partitions of it); 0: unbounded.
    # [namespaces.<name>] tables set them for one namespace.
    namespace_max_entries: int = 0
    namespace_max_bytes: int = 0
    # Which entry goes at a bound: "s3fifo" (scan-resistant) or "lru".
    eviction: str = "s3fifo"
    # The exact tier: a question asked again in the same normal form is answered before
    # any embedding. Off only to measure what it buys (BENCHMARKS.md).
    exact_tier: bool = True
    # Lowest cosine similarity a cached question may have to be considered at all; the
    # hit decision itself comes from target_precision.
    min_similarity: float = 0.80
    # The share of semantic hits that should be right. The calibration of the verifier
    # turns it into a score threshold ([namespaces.<name>] tables can set their own).
    target_precision: float = 0.95
    # "default": the shipped cross-encoder checks every candidate; "none": cosine alone;
    # or a folder with model.onnx, tokenizer.json, calibration.json (scripts/train_verifier.py).
    verifier: str = "default"
    max_prompt_bytes: int = 32 * 1024
    max_response_bytes: int = 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    # How often expired entries are swept and their index slots freed.
    expire_interval_ms: int = 1000


@dataclass
class StorageConfig:
    # "always": a Store is acknowledged only once its log record is on disk (one flush per
    # write). "interval": the log is flushed every fsync_interval_ms; a crash can lose the
    # writes of the last interval, in exchange for no flush per write.
    fsync: str = "always"
    fsync_interval_ms: int = 200
    # A snapshot is written when the log grows past this, and at a clean shutdown.
    snapshot_log_bytes: int = 64 * 1024 * 1024


@dataclass
class EmbeddingConfig:
    # A name from `semcached models list`, or a folder holding model.onnx + tokenizer.json.
    model: str = "all-MiniLM-L6-v2-int8"
    # Where `semcached models pull` puts models; empty: ~/.cache/semcached/models.
    models_dir: str = ""
    pooling: str = "mean"
    # Embedding threads (each runs a one-thread ONNX session); 0: one per core.
    threads: int = 0
    max_tokens: int = 256
    # Texts whose embeddings (and verifier scores of question pairs) are remembered:
    # popular paraphrases then skip the model. About 2 KB each; 0: off.
    cache_entries: int = 10_000


@dataclass
class ProviderSettings:
    """One [providers.<name>] table."""

    kind: str = "openai"  # openai (any OpenAI-compatible endpoint) | anthropic
    # Empty: the SDK's default (for openai: OPENAI_BASE_URL when set, else api.openai.com).
    base_url: str = ""
    # The environment variable holding the key (never logged); empty: no key needed.
    api_key_env: str = ""
    timeout_seconds: float = 60.0
    max_concurrency: int = 64


def default_providers() -> dict[str, ProviderSettings]:
    return {
        "openai": ProviderSettings("openai", "", "OPENAI_API_KEY"),
        "groq": ProviderSettings("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        "anthropic": ProviderSettings("anthropic", "", "ANTHROPIC_API_KEY"),
    }


def default_tiers() -> dict[str, list[str]]:
    """Each tier: "<provider>/<model>" entries, the primary first, then its fallbacks.
    Common practice: an 8B open model for cheap questions, a small fast model for the
    rest, a frontier model for reasoning and code."""
    return {
        "cheap": ["groq/llama-3.1-8b-instant", "openai/gpt-4o-mini"],
        "standard": ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"],
        "hard": ["openai/gpt-4o", "anthropic/claude-3-5-sonnet-latest"],
        "code": ["anthropic/claude-3-5-sonnet-latest", "openai/gpt-4o"],
    }


@dataclass
class RoutingConfig:
    # The tier for questions no rule or exemplar claims, and for classifier = "off".
    default_tier: str = "standard"
    # "rules+embedding" | "rules" | "off".
    classifier: str = "rules+embedding"
    # JSON lines {"text", "tier"} added to the shipped exemplars.
    exemplars: str = ""
    # Attempts on one model (first try included) before moving to its fallback.
    max_attempts: int = 3
    backoff_initial_ms: int = 200
    backoff_max_ms: int = 5000
    # Consecutive failures that open a model's circuit, and how long it stays open.
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    # Requests sampling hotter than this bypass the cache unless they opt in.
    max_cacheable_temperature: float = 1.0


@dataclass
class LedgerConfig:
    # Every request becomes a row in <data_dir>/ledger.db (SQLite, WAL), written in
    # batches off the request path at this interval; a crash can lose the last interval.
    flush_interval_ms: int = 500
    enabled: bool = True
    # Rows older than this are deleted (the hourly sums stay), so the file stops growing
    # at about a week of traffic; reports over older periods are exact to the hour. 0:
    # keep every row.
    keep_rows_days: int = 7


@dataclass
class BudgetSettings:
    """One [budgets.<name>] table."""

    scope: str = "user"  # user | feature | tenant
    # The user, feature or tenant it applies to; "*": each one separately.
    key: str = "*"
    period: str = "day"  # day | month (UTC)
    limit_usd: float = 0.0
    action: str = "reject"  # reject (RESOURCE_EXHAUSTED) | downgrade (the cheapest tier)


@dataclass
class NamespaceSettings:
    max_entries: int = 0
    max_bytes: int = 0
    # 0: cache.target_precision.
    target_precision: float = 0.0


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    # [prices."<model>"] tables over the shipped price table (checked by pricing.Prices).
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[str, BudgetSettings] = field(default_factory=dict)
    # [providers.<name>] and [tiers] tables; a file that has one replaces the defaults.
    providers: dict[str, ProviderSettings] = field(default_factory=default_providers)
    tiers: dict[str, list[str]] = field(default_factory=default_tiers)
    # Providers named in the file: starting without their key is an error.
    required_providers: set[str] = field(default_factory=set)
    # Per-namespace bounds, from [namespaces.<name>] tables of the file.
    namespaces: dict[str, NamespaceSettings] = field(default_factory=dict)

    def validate(self) -> Config:
        c = self.cache
        _require(1 <= self.server.port <= 65535 or self.server.port == 0,
                 "server.port", "must be in 1..65535 (or 0 for any free port)")
        _require(self.server.shutdown_grace_seconds >= 0, "server.shutdown_grace_seconds",
                 "must not be negative")
        _require(self.server.log_level in ("debug", "info", "warning", "error"),
                 "server.log_level", "must be one of debug, info, warning, error")
        _require(0 <= c.default_ttl_seconds <= 100 * 365 * 24 * 3600, "cache.default_ttl_seconds",
                 "must be between 0 and 100 years in seconds")
        _require(c.max_entries >= 1, "cache.max_entries", "must be at least 1")
        for key in ("max_bytes", "namespace_max_entries", "namespace_max_bytes"):
            _require(getattr(c, key) >= 0, f"cache.{key}", "must not be negative (0: unbounded)")
        _require(c.eviction in ("s3fifo", "lru"), "cache.eviction", "must be 's3fifo' or 'lru'")
        for name, limits in self.namespaces.items():
            for key in ("max_entries", "max_bytes"):
                _require(getattr(limits, key) >= 0, f"namespaces.{name}.{key}",
                         "must not be negative (0: unbounded)")
        _require(not math.isnan(c.min_similarity) and 0 <= c.min_similarity <= 1,
                 "cache.min_similarity", "must be in [0, 1]")
        _require(_is_precision(c.target_precision), "cache.target_precision", "must be in [0, 1)")
        for name, settings in self.namespaces.items():
            _require(_is_precision(settings.target_precision), f"namespaces.{name}.target_precision",
                     "must be in [0, 1) (0: cache.target_precision)")
        _require(c.verifier in ("default", "none") or Path(c.verifier).expanduser().is_dir(),
                 "cache.verifier", "must be 'default', 'none' or an existing folder")
        for key in ("max_prompt_bytes", "max_response_bytes", "max_metadata_bytes",
                    "expire_interval_ms"):
            _require(getattr(c, key) >= 1, f"cache.{key}", "must be at least 1")
        _require(self.storage.fsync in ("always", "interval"), "storage.fsync",
                 "must be 'always' or 'interval'")
        _require(self.storage.fsync_interval_ms >= 1, "storage.fsync_interval_ms", "must be at least 1")
        _require(self.storage.snapshot_log_bytes >= 4096, "storage.snapshot_log_bytes",
                 "must be at least 4096")
        _require(self.embedding.pooling in ("mean", "cls"), "embedding.pooling",
                 "must be 'mean' or 'cls'")
        _require(self.embedding.threads >= 0, "embedding.threads", "must not be negative")
        _require(self.embedding.max_tokens >= 8, "embedding.max_tokens", "must be at least 8")
        _require(self.embedding.cache_entries >= 0, "embedding.cache_entries", "must not be negative")
        self._validate_routing()
        _require(0 <= self.server.metrics_port <= 65535, "server.metrics_port", "must be in 0..65535 (0: off)")
        _require(self.server.event_loop in ("uvloop", "asyncio"), "server.event_loop", "must be 'uvloop' or 'asyncio'")
        _require(self.ledger.flush_interval_ms >= 10, "ledger.flush_interval_ms", "must be at least 10")
        _require(self.ledger.keep_rows_days >= 0, "ledger.keep_rows_days", "must not be negative (0: keep every row)")
        for name, b in self.budgets.items():
            _require(b.scope in ("user", "feature", "tenant"), f"budgets.{name}.scope",
                     "must be 'user', 'feature' or 'tenant'")
            _require(bool(b.key), f"budgets.{name}.key", "must name one (or '*' for each)")
            _require(b.period in ("day", "month"), f"budgets.{name}.period", "must be 'day' or 'month'")
            _require(b.limit_usd > 0 and not math.isnan(b.limit_usd), f"budgets.{name}.limit_usd", "must be positive")
            _require(b.action in ("reject", "downgrade"), f"budgets.{name}.action", "must be 'reject' or 'downgrade'")
        return self


    def _validate_routing(self) -> None:
        r = self.routing
        for name, p in self.providers.items():
            _require(p.kind in ("openai", "anthropic"), f"providers.{name}.kind",
                     "must be 'openai' or 'anthropic'")
            _require(p.timeout_seconds > 0, f"providers.{name}.timeout_seconds", "must be positive")
            _require(p.max_concurrency >= 1, f"providers.{name}.max_concurrency", "must be at least 1")
        for tier, models in self.tiers.items():
            _require(bool(models), f"tiers.{tier}", "must list at least one \"<provider>/<model>\"")
            for entry in models:
                provider, _, model = entry.partition("/")
                _require(bool(model), f"tiers.{tier}", f"entry {entry!r} must be \"<provider>/<model>\"")
                _require(provider in self.providers, f"tiers.{tier}",
                         f"names provider {provider!r}, which is not configured "
                         f"(configured: {', '.join(self.providers) or 'none'})")
        _require(r.default_tier in self.tiers, "routing.default_tier",
                 f"must be one of the tiers ({', '.join(self.tiers) or 'none'})")
        _require(r.classifier in ("rules+embedding", "rules", "off"), "routing.classifier",
                 "must be 'rules+embedding', 'rules' or 'off'")
        _require(not r.exemplars or Path(r.exemplars).expanduser().is_file(), "routing.exemplars",
                 "must be empty or an existing JSON lines file")
        _require(r.max_attempts >= 1, "routing.max_attempts", "must be at least 1")
        _require(0 < r.backoff_initial_ms <= r.backoff_max_ms, "routing.backoff_initial_ms",
                 "must be positive and at most routing.backoff_max_ms")
        _require(r.breaker_failures >= 1, "routing.breaker_failures", "must be at least 1")
        _require(r.breaker_cooldown_seconds > 0, "routing.breaker_cooldown_seconds", "must be positive")
        _require(not math.isnan(r.max_cacheable_temperature) and r.max_cacheable_temperature >= 0,
                 "routing.max_cacheable_temperature", "must not be negative")


def _is_precision(value: float) -> bool:
    return not math.isnan(value) and 0 <= value < 1


def _require(ok: bool, key: str, rule: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key} {rule}")


def load(path: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then SEMCACHED_* variables."""
    config = Config()
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        _apply_file(config, data, str(path))
    _apply_env(config, os.environ if environ is None else environ)
    return config.validate()


_TABLES = ("namespaces", "providers", "tiers", "required_providers", "prices", "budgets")


def _sections(config: Config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in _TABLES}


def _apply_file(config: Config, data: dict[str, Any], where: str) -> None:
    sections = _sections(config)
    for name, values in data.items():
        if name == "namespaces" and isinstance(values, dict):
            _apply_namespaces(config, values, where)
            continue
        if name == "providers" and isinstance(values, dict):
            _apply_providers(config, values, where)
            continue
        if name == "tiers" and isinstance(values, dict):
            _apply_tiers(config, values, where)
            continue
        if name == "prices" and isinstance(values, dict):
            config.prices = dict(values)
            continue
        if name == "budgets" and isinstance(values, dict):
            for budget, table in values.items():
                if not isinstance(table, dict):
                    raise ConfigError(f"{where}: [budgets.{budget}] must be a table")
                settings = config.budgets[budget] = BudgetSettings()
                for key, value in table.items():
                    _set(settings, f"budgets.{budget}", key, value, where)
            continue
        if name not in sections:
            raise ConfigError(f"{where}: unknown section [{name}]; known: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        for key, value in values.items():
            _set(sections[name], name, key, value, where)


def _apply_namespaces(config: Config, tables: dict[str, Any], where: str) -> None:
    from semcached.validation import NAMESPACE_RULE, namespace_is_valid

    for name, values in tables.items():
        if not namespace_is_valid(name):
            raise ConfigError(f"{where}: [namespaces.{name}]: invalid namespace: {NAMESPACE_RULE}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [namespaces.{name}] must be a table")
        limits = config.namespaces.setdefault(name, NamespaceSettings())
        for key, value in values.items():
            _set(limits, f"namespaces.{name}", key, value, where)


def _apply_providers(config: Config, tables: dict[str, Any], where: str) -> None:
    config.providers = {}
    for name, values in tables.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [providers.{name}] must be a table")
        if "/" in name or not name:
            raise ConfigError(f"{where}: [providers.{name}]: a provider name cannot contain '/'")
        settings = config.providers[name] = ProviderSettings()
        for key, value in values.items():
            _set(settings, f"providers.{name}", key, value, where)
        config.required_providers.add(name)


def _apply_tiers(config: Config, table: dict[str, Any], where: str) -> None:
    config.tiers = {}
    for tier, models in table.items():
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError(f"{where}: tiers.{tier} must be a list of \"<provider>/<model>\" strings")
        config.tiers[tier] = list(models)


def _apply_env(config: Config, environ: Mapping[str, str]) -> None:
    for name, section in _sections(config).items():
        for f in fields(section):
            var = f"SEMCACHED_{name}_{f.name}".upper()
            if var in environ:
                _set(section, name, f.name, environ[var], f"environment variable {var}")


def _set(section: Any, name: str, key: str, value: Any, where: str) -> None:
    known = {f.name: f for f in fields(section)}
    if key not in known:
        raise ConfigError(f"{where}: unknown key {name}.{key}; known: {', '.join(known)}")
    kind = type(getattr(section, key))
    setattr(section, key, _coerce(value, kind, f"{where}: {name}.{key}"))


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(value: Any, kind: type, what: str) -> Any:
    if isinstance(value, str) and kind is not str:
        try:
            return kind(value.strip()) if kind is not bool else _parse_bool(value)
        except ValueError:
            raise ConfigError(f"{what} must be {_KIND_NAMES[kind]}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ConfigError(f"{what} must be {_KIND_NAMES[kind]}, got {value!r}")
    return value


def _parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def replace(config: Config, **overrides: Any) -> Config:
    """A copy with ``section__key=value`` overrides (used for CLI flags), validated."""
    sections = {k: dataclasses.replace(v) for k, v in _sections(config).items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        name, key = dotted.split("__")
        _set(sections[name], name, key, value, "command line")
    return Config(**sections, namespaces=dict(config.namespaces), providers=dict(config.providers),
                  tiers=dict(config.tiers), required_providers=set(config.required_providers),
                  prices=dict(config.prices), budgets=dict(config.budgets)).validate()


def data_dir(config: Config) -> Path:
    return Path(config.server.data_dir).expanduser()
