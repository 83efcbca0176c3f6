"""Prometheus metrics (``server.metrics_port``). Label sets stay bounded: RPC names, hit
kinds, tiers from the config, and models configured in a tier (any other model or tier is
"other"); never a prompt, user or namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _StoreGauges(Collector):
    """Entries and bytes, read from the store when scraped."""

    def __init__(self, read: Callable[[], tuple[int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries, size = self._read()
        yield GaugeMetricFamily("semcached_entries", "entries in the cache", value=entries)
        yield GaugeMetricFamily("semcached_bytes", "bytes accounted to cache entries", value=size)


class _EmbeddingCache(Collector):
    """The embedding cache's counters, read when scraped."""

    def __init__(self, read: Callable[[], tuple[int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        hits, misses = self._read()
        family = CounterMetricFamily("semcached_embedding_cache", "questions whose embedding was remembered "
                                     "(hit) or had to be computed (miss)", labels=["result"])
        family.add_metric(["hit"], hits)
        family.add_metric(["miss"], misses)
        yield family


class Metrics:
    def __init__(self, known_models: set[str], tiers: set[str], store: Callable[[], tuple[int, int]]) -> None:
        self.registry = CollectorRegistry()
        self._known = known_models
        self._tiers = tiers
        r = self.registry
        self.requests = Counter("semcached_requests", "requests by RPC and outcome", ["rpc", "kind"], registry=r)
        self.latency = Histogram("semcached_latency_seconds", "time spent, by stage (lookup, embedding, upstream)",
                                 ["stage"], buckets=_LATENCY, registry=r)
        self.upstream = Counter("semcached_upstream_calls", "upstream calls by model and result",
                                ["model", "result"], registry=r)
        self.spend = Counter("semcached_spend_usd", "USD spent upstream", ["model", "tier"], registry=r)
        self.savings = Counter("semcached_savings_usd", "USD not spent thanks to the cache", ["model", "tier"],
                               registry=r)
        self.feedback = Counter("semcached_feedback", "feedback on served hits", ["correct"], registry=r)
        r.register(_StoreGauges(store))

    def watch_embedding_cache(self, read: Callable[[], tuple[int, int]]) -> None:
        """``read``: the embedding cache's (hits, misses)."""
        self.registry.register(_EmbeddingCache(read))

    def model(self, name: str) -> str:
        """A bounded label for a model name: a configured "<provider>/<model>", also when
        the provider answered with a dated version of it; anything else is "other"."""
        if name in self._known:
            return name
        matches = [known for known in self._known if name.startswith(known + "-")]
        return max(matches, key=len) if matches else "other"

    def tier(self, name: str) -> str:
        return name if name in self._tiers or not name else "other"

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
