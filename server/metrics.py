"""Prometheus metrics: one registry, defined in one place, updated where the work happens."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "openlisten_requests_total",
    "HTTP requests by route and status",
    ["route", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "openlisten_request_seconds",
    "REST request wall time",
    ["route"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
ACTIVE_STREAMS = Gauge("openlisten_active_streams", "Open WebSocket streams", registry=REGISTRY)
QUEUE_DEPTH = Gauge(
    "openlisten_queue_depth", "Windows waiting for an inference worker", registry=REGISTRY
)
QUEUE_WAIT_SECONDS = Histogram(
    "openlisten_queue_wait_seconds",
    "Time a window waited before its batch ran",
    ["priority"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "openlisten_batch_size",
    "Windows per inference batch",
    registry=REGISTRY,
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
PACK_PIECES = Histogram(
    "openlisten_pack_pieces",
    "Windows sharing one encoder window when packing is on (1 = decoded alone)",
    registry=REGISTRY,
    buckets=(1, 2, 3, 4, 6, 8, 12),
)
PACK_REFUSED = Counter(
    "openlisten_pack_refused_total",
    "Packed windows whose split the guards refused; their windows were decoded one by one",
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "openlisten_inference_seconds",
    "Wall time of one inference batch",
    ["model"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
AUDIO_SECONDS = Counter(
    "openlisten_audio_seconds_total", "Seconds of audio transcribed", ["kind"], registry=REGISTRY
)
REJECTED = Counter(
    "openlisten_rejected_total", "Work refused by backpressure", ["kind"], registry=REGISTRY
)
REAL_TIME_FACTOR = Histogram(
    "openlisten_real_time_factor",
    "Processing time over audio duration per REST request",
    registry=REGISTRY,
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
)
INTERIM_LATENCY = Histogram(
    "openlisten_stream_interim_latency_seconds",
    "Audio received to interim result sent",
    registry=REGISTRY,
    buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5),
)
ENDPOINT_LATENCY = Histogram(
    "openlisten_stream_endpoint_latency_seconds",
    "End of speech (stream time) to speech_final sent",
    registry=REGISTRY,
    buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5),
)
SPEAKER_WAIT = Histogram(
    "openlisten_stream_speaker_wait_seconds",
    "diarize=true: how long a final waited for its speakers after its decode was done",
    registry=REGISTRY,
    buckets=(0.0, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2),
)
MODEL_LOADED = Gauge(
    "openlisten_model_loaded", "1 when a model is loaded and warm", ["model"], registry=REGISTRY
)
GPU_MEMORY_BYTES = Gauge(
    "openlisten_gpu_memory_used_bytes",
    "GPU memory in use (CUDA only)",
    ["device"],
    registry=REGISTRY,
)
CALLBACK_JOBS = Gauge(
    "openlisten_callback_jobs",
    "Callback jobs on disk by state (transcribe, deliver, dead)",
    ["state"],
    registry=REGISTRY,
)
CALLBACK_DELIVERIES = Counter(
    "openlisten_callback_deliveries_total",
    "Callback delivery attempts by outcome (delivered, failed)",
    ["outcome"],
    registry=REGISTRY,
)
CALLBACK_DEAD_LETTERS = Counter(
    "openlisten_callback_dead_letters_total",
    "Callback jobs whose delivery gave up after every retry",
    registry=REGISTRY,
)
