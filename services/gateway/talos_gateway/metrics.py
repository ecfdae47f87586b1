"""Prometheus metrics of the gateway (served at ``/metrics``). Ids and codes only, never content."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "talos_gateway_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "talos_gateway_http_request_seconds", "Time to answer an HTTP request (streams: to the end)", ["route"]
)
GRPC_REQUESTS = Counter("talos_gateway_grpc_requests_total", "Public gRPC calls", ["method", "code"])
REJECTED = Counter(
    "talos_gateway_requests_rejected_total", "Job requests refused before acceptance (nothing held)", ["code"]
)
JOBS = Counter("talos_gateway_jobs_total", "Images of accepted jobs by how they ended", ["outcome"])
JOBS_ACTIVE = Gauge("talos_gateway_jobs_active", "Accepted jobs that have not ended")
JOBS_HELD = Gauge("talos_gateway_jobs_held", "Ended jobs whose record (and result, until delivered) is held")
DOWNSTREAM_SECONDS = Histogram(
    "talos_gateway_downstream_seconds",
    "Calls to billing and moderation",
    ["service", "method", "outcome"],
    buckets=_FAST_BUCKETS,
)
# Every ClassifyImage call the gateway makes; stays flat for jobs with nsfw=true.
CLASSIFY_CALLS = Counter("talos_gateway_classify_calls_total", "ClassifyImage calls made to moderation")
CLASSIFY_SKIPPED = Counter(
    "talos_gateway_classify_skipped_total", "Completed renders not classified because 18+ was on"
)
PREVIEWS_WITHHELD = Counter(
    "talos_gateway_previews_withheld_total", "Live previews withheld with 18+ off (flagged, or unchecked)"
)
# The mesh's own share of a job: everything but the wait for and the work of the render node.
OVERHEAD_SECONDS = Histogram(
    "talos_gateway_job_overhead_seconds",
    "Gateway, moderation and billing time of a completed job, render excluded",
    buckets=_FAST_BUCKETS,
)
