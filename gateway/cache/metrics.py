"""The cache's Prometheus metrics, in a registry of their own.

A registry per cache (not the process default) so that two caches in one process, as in tests
with two gateway replicas, do not collide; the gateway exposes it by registering it into its own
registry (`gateway_registry.register(cache.registry)`: a registry is itself a collector).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)


class CacheMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.lookups = Counter(
            "tandem_cache_lookups",
            "Cache lookups by layer and result (hit|miss)",
            ["layer", "result"],
            registry=r,
        )
        self.skipped = Counter(
            "tandem_cache_skipped",
            "Requests the cache did not consider, by reason",
            ["reason"],
            registry=r,
        )
        self.stores = Counter(
            "tandem_cache_stores",
            "Store attempts by outcome (stored or the exclusion reason)",
            ["outcome"],
            registry=r,
        )
        self.evictions = Counter(
            "tandem_cache_evictions", "Entries dropped, by reason", ["reason"], registry=r
        )
        self.entries = Gauge("tandem_cache_entries", "Entries held by this replica", registry=r)
        self.latency = Histogram(
            "tandem_cache_lookup_seconds",
            "Lookup time by deciding layer",
            ["layer"],
            buckets=BUCKETS,
            registry=r,
        )
        self.embed_batch = Histogram(
            "tandem_cache_embed_batch_size",
            "Texts per embedding forward pass (lookups that arrive together share one)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.shared = Counter(
            "tandem_cache_shared_entries",
            "Entries received from other replicas through Redis",
            ["source"],
            registry=r,
        )
        # by team and model (route alias): the alert names the route whose policy to tighten
        self.rechecks = Counter(
            "tandem_cache_rechecks",
            "Sampled semantic hits re-asked upstream, by result (agree|disagree|error)",
            ["team", "model", "result"],
            registry=r,
        )
        self.wrong_rate = Gauge(
            "tandem_cache_estimated_wrong_hit_rate",
            "Share of re-checked semantic hits whose fresh answer disagreed (sliding window)",
            ["team", "model"],
            registry=r,
        )
        self.wrong_rate_threshold = Gauge(
            "tandem_cache_wrong_hit_rate_alert_threshold",
            "Alert when the estimated wrong-hit rate exceeds this",
            registry=r,
        )
        self.wrong_rate_alert = Gauge(
            "tandem_cache_wrong_hit_rate_alert",
            "1 while the estimated wrong-hit rate is above its threshold (with enough samples)",
            ["team", "model"],
            registry=r,
        )

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples named `name` whose labels include `labels` (tests, the replay tool)."""
        total = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total
