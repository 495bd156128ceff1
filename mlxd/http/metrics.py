"""Prometheus metrics (prometheus-client, one registry per app so daemons never collide)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mlxd.http.state import DaemonState

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/health",
        "/mlxd/status",
        "/mlxd/reload",
        "/metrics",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/api/chat",
        "/api/generate",
        "/api/tags",
        "/api/show",
        "/api/ps",
        "/api/version",
        "/api/embed",
        "/api/embeddings",
        "/v1/embeddings",
        "/",
    }
)


def route_label(path: str) -> str:
    """A bounded label for a path: known routes as they are, the rest grouped."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    if path.startswith("/v1/responses/"):
        return "/v1/responses/{id}"
    if path.startswith("/mlxd/models/") and path.endswith(("/load", "/unload")):
        return "/mlxd/models/{alias}/" + path.rsplit("/", 1)[1]
    return "other"


class _RuntimeCollector(Collector):
    """Gauges read from the engine and the config store at scrape time."""

    def __init__(self, state: DaemonState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self.state.engine.status()
        yield GaugeMetricFamily(
            "mlxd_active_sequences", "Sequences admitted and not finished.", value=status.active_sequences
        )
        yield GaugeMetricFamily(
            "mlxd_queue_depth", "Sequences waiting for a batch slot.", value=status.queue_depth
        )
        yield GaugeMetricFamily("mlxd_loaded_models", "Model units in memory.", value=len(status.models))
        yield GaugeMetricFamily(
            "mlxd_largest_batch", "Most sequences decoded in one step so far.", value=status.largest_batch
        )
        yield CounterMetricFamily(
            "mlxd_embedding_batches",
            "Embedding batches run on the worker (a long input's chunk counts as one).",
            value=status.embedding_batches,
        )
        yield CounterMetricFamily(
            "mlxd_embedded_inputs", "Embedding inputs embedded.", value=status.embedded_inputs
        )
        memory = GaugeMetricFamily(
            "mlxd_model_memory_bytes", "Memory of each loaded model unit.", labels=["alias"]
        )
        for model in status.models:
            memory.add_metric([model.alias], model.memory_bytes)
        yield memory
        if status.rank_step_seconds:
            steps = GaugeMetricFamily(
                "mlxd_rank_step_seconds",
                "Seconds per decode pass of each rank of a distributed daemon, as last reported.",
                labels=["rank"],
            )
            for rank, seconds in enumerate(status.rank_step_seconds):
                steps.add_metric([str(rank)], seconds)
            yield steps
        yield GaugeMetricFamily(
            "mlxd_worker_up",
            "1 while the MLX worker thread runs.",
            value=1 if status.worker == "running" else 0,
        )
        configs = self.state.configs
        yield GaugeMetricFamily(
            "mlxd_config_generation", "Generation of the config in force.", value=configs.generation
        )
        yield GaugeMetricFamily(
            "mlxd_config_last_reload_ok",
            "0 while the last config edit was rejected.",
            value=0 if configs.last_error else 1,
        )
        yield GaugeMetricFamily(
            "mlxd_config_reload_failures",
            "Config edits rejected since start.",
            value=getattr(configs, "failures", 0),
        )


@dataclass
class Meter:
    """Timing of one generation request, recorded when it ends."""

    metrics: Metrics
    alias: str
    started: float = field(default_factory=time.perf_counter)
    first: float | None = None

    def first_token(self) -> None:
        """Call when the first generated text is about to be sent."""
        if self.first is None:
            self.first = time.perf_counter()
            self.metrics.ttft.labels(self.alias).observe(self.first - self.started)

    def done(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Call once when the generation finished."""
        self.metrics.prompt_tokens.labels(self.alias).inc(prompt_tokens)
        self.metrics.generated_tokens.labels(self.alias).inc(completion_tokens)
        if self.first is not None and completion_tokens > 1:
            elapsed = time.perf_counter() - self.first
            if elapsed > 0:
                self.metrics.decode_rate.labels(self.alias).observe((completion_tokens - 1) / elapsed)


class Metrics:
    """Every metric the daemon exports."""

    def __init__(self, state: DaemonState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlxd_requests",
            "HTTP requests by API dialect, route and status.",
            ["dialect", "route", "status"],
            registry=self.registry,
        )
        self.stream_errors = Counter(
            "mlxd_stream_errors",
            "Streams that started (200) and then ended with an error event, by route and error code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlxd_request_duration_seconds",
            "End-to-end request time.",
            ["dialect", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "mlxd_time_to_first_token_seconds",
            "Request start to first generated text.",
            ["alias"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decode_rate = Histogram(
            "mlxd_decode_tokens_per_second",
            "Generated tokens per second of each request.",
            ["alias"],
            buckets=_RATE_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "mlxd_prompt_tokens", "Prompt tokens processed.", ["alias"], registry=self.registry
        )
        self.generated_tokens = Counter(
            "mlxd_generated_tokens", "Tokens generated.", ["alias"], registry=self.registry
        )
        self.registry.register(_RuntimeCollector(state))

    def meter(self, alias: str) -> Meter:
        """A meter for one generation request."""
        return Meter(self, alias)

    def observe(
        self, dialect: str, path: str, status: int, seconds: float, stream_error: str | None = None
    ) -> None:
        """Count one finished HTTP request (and the error event that ended its stream, if any)."""
        route = route_label(path)
        self.requests.labels(dialect, route, str(status)).inc()
        self.latency.labels(dialect, route).observe(seconds)
        if stream_error is not None:
            self.stream_errors.labels(route, stream_error).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
