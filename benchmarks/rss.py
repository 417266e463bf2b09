"""Resident memory over a run: the soak's VmRSS sampler (``stream_soak.py``)."""

from __future__ import annotations

from .machine import rss_mb


class RssSampler:
    """The pipeline's ``progress`` callback (called once per written frame): reads VmRSS at every frame (tens of
    microseconds), keeps the maximum and the last value, and stores every ``every``-th frame's value; the value
    at ``baseline_after`` processed frames is the baseline."""

    def __init__(self, baseline_after: int, every: int = 10) -> None:
        self.baseline_after = max(1, int(baseline_after))
        self.every = max(1, int(every))
        self.n = 0
        self.samples: list[tuple[int, float]] = []  # (processed frames, MB)
        self.baseline: float | None = None
        self.last: tuple[int, float] | None = None
        self.max: float | None = None

    def __call__(self, k: int = 1) -> None:
        self.n += k
        v = rss_mb()
        if v is None:
            return
        self.last = (self.n, v)
        self.max = v if self.max is None else max(self.max, v)
        if self.n == self.baseline_after:
            self.baseline = v
        if self.n % self.every == 0 or self.n == self.baseline_after:
            self.samples.append(self.last)

    def finish(self) -> None:
        """After the run: the last frame's value ends the series."""
        if self.last is not None and (not self.samples or self.samples[-1][0] != self.last[0]):
            self.samples.append(self.last)

    def slope_mb_per_1000(self) -> float | None:
        import numpy as np

        pts = [(n, v) for n, v in self.samples if n >= self.baseline_after]
        if len(pts) < 10:  # too few samples for a trend
            return None
        x, y = np.array(pts, dtype=np.float64).T
        if x.max() == x.min():
            return None
        return float(np.polyfit(x, y, 1)[0] * 1000.0)
