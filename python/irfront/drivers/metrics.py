"""The micro-batch driver's Ray metrics (``ray.util.metrics``), exported by the driver
node's metrics agent (Prometheus text format on its ``MetricsExportPort``; Ray prefixes
the names with ``ray_``; the agent needs ``ray[default]``). Every metric has the tag
``stream`` (``MicroBatchStream(name=...)``, default "stream").

| metric | kind | recorded |
|---|---|---|
| ``irfront_batch_latency_seconds`` | histogram | once per batch, when the driver sees it done: from its *scheduled* start (its slot on the fixed grid) to then, so time held back by the window counts (``BatchRecord.done - scheduled``) |
| ``irfront_batches_in_flight`` | gauge | batches submitted and not done, set when one opens or closes |
| ``irfront_batch_held_back_seconds`` | histogram | once per batch: how long it waited for room in the in-flight window (0 when it did not) |
| ``irfront_recoveries`` | counter | reducer recoveries (restore + replay); tag ``cause``: the exception's class |

ray_patch adds ``irfront_live_groups``, ``irfront_placement_solve_seconds``,
``irfront_group_bytes_moved`` and ``irfront_node_failures`` (ray_patch/metrics.py).
The objects are made on first use, once Ray is connected, and recorded a few times per
batch, never per task. ``ray_patch.metrics.enabled = False`` (or ``IRFRONT_METRICS=0``)
turns them all off.
"""
from __future__ import annotations

from typing import Optional

import ray
from ray.util.metrics import Counter, Gauge, Histogram

from ray_patch import metrics as core_metrics

LATENCY_BOUNDARIES = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
                      60.0]
HELD_BOUNDARIES = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class StreamMetrics:
    """The stream metrics of one ``MicroBatchStream`` (its ``stream`` tag); records are
    no-ops while Ray is not connected or metrics are off."""

    _shared: Optional[tuple] = None  # (latency, in flight, held back, recoveries)

    def __init__(self, stream: str):
        self.tags = {"stream": str(stream)}
        self._m: Optional[tuple] = None
        self._cause_tags: dict[str, dict[str, str]] = {}

    def _get(self) -> Optional[tuple]:
        if self._m is not None:
            return self._m
        if not core_metrics.enabled or not ray.is_initialized():
            return None
        if StreamMetrics._shared is None:
            try:
                StreamMetrics._shared = (
                    Histogram("irfront_batch_latency_seconds",
                              description="Micro-batch latency from its scheduled start "
                                          "to the driver seeing it done.",
                              boundaries=LATENCY_BOUNDARIES, tag_keys=("stream",)),
                    Gauge("irfront_batches_in_flight",
                          description="Micro-batches submitted and not done.",
                          tag_keys=("stream",)),
                    Histogram("irfront_batch_held_back_seconds",
                              description="Time a micro-batch waited for room in the "
                                          "in-flight window.",
                              boundaries=HELD_BOUNDARIES, tag_keys=("stream",)),
                    Counter("irfront_recoveries",
                            description="Reducer recoveries (restore and replay).",
                            tag_keys=("stream", "cause")),
                )
            except Exception:  # pragma: no cover - a Ray without custom metrics
                core_metrics.enabled = False
                return None
        self._m = StreamMetrics._shared
        return self._m

    def batch_done(self, latency_s: float, in_flight: int) -> None:
        m = self._m or self._get()
        if m is not None:
            m[0].observe(max(0.0, latency_s), self.tags)
            m[1].set(in_flight, self.tags)

    def batch_opened(self, held_back_s: float, in_flight: int) -> None:
        m = self._m or self._get()
        if m is not None:
            m[2].observe(max(0.0, held_back_s), self.tags)
            m[1].set(in_flight, self.tags)

    def recovered(self, cause: str) -> None:
        m = self._m or self._get()
        if m is not None:
            tags = self._cause_tags.get(cause)
            if tags is None:
                tags = self._cause_tags[cause] = {**self.tags, "cause": cause}
            m[3].inc(1, tags)
