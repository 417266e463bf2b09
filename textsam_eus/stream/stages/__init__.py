"""The stages of the streaming pipeline, each one small class that owns its state and describes itself.

* :mod:`.base`     - the queues between stages, :class:`~.base.Stage` (one thread: inbox -> fn -> outbox) and the
  loop every stage thread runs (:func:`~.base.run_stage`).
* :mod:`.capture`  - :class:`~.capture.CaptureStage`: reads the source (timed), numbers the frames, finds the
  imaging sector (``roi="auto"``), stops at ``max_frames``.
* :mod:`.segment`  - :class:`~.segment.SegmentStage`: the engine on the ROI / sector, the temporal seed.
* :mod:`.presence` - :class:`~.presence.PresencePolicy`: presence over time (hysteresis) and the outline's state.
* :mod:`.draw`     - :class:`~.draw.DrawStage`: the overlay and its HUD; size changes and mask stability.
* :mod:`.write`    - :class:`~.write.WriteStage`: the fan-out to the sinks (opened from
  :mod:`textsam_eus.stream.sinks.registry`) and their finalisation, also on a full disk.

:meth:`textsam_eus.stream.pipeline.StreamPipeline.compose` joins them; the names below are re-exported, so
``from textsam_eus.stream.stages import FifoQueue`` keeps working.
This package must stay free of torch and of the model / engine packages.
"""

from .base import END, STOP_GRACE_S, FifoQueue, LatestQueue, ReorderQueue, Stage, run_stage

__all__ = ["END", "STOP_GRACE_S", "LatestQueue", "FifoQueue", "ReorderQueue", "Stage", "run_stage"]
