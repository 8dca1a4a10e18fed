"""Prometheus metrics of one app, in their own registry (two apps in one process, as in tests, never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """What GET /metrics exports; names start with istpan_. Labels are route templates, never raw paths (bounded)."""

    def __init__(self, max_batch: int) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("istpan_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("istpan_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, max_batch})
        self.batch_size = Histogram("istpan_batch_size", "clips per forward pass", buckets=sizes, registry=r)
        self.queue_depth = Gauge("istpan_queue_depth", "decoded clips waiting for a forward pass", registry=r)
        self.inflight = Gauge("istpan_inflight_predictions", "predict requests admitted (reading to answered)",
                              registry=r)
        self.decode_failures = Counter("istpan_decode_failures", "uploads that were not a decodable video",
                                       ["reason"], registry=r)
        self.rejected = Counter("istpan_rejected", "requests refused for capacity (503) or size (413)", ["reason"],
                                registry=r)
        self.active_streams = Gauge("istpan_active_streams", "stream sessions running", registry=r)
        self.stream_decisions = Counter("istpan_stream_decisions", "decisions sent by stream sessions", registry=r)

    def export(self) -> bytes:
        return generate_latest(self.registry)
