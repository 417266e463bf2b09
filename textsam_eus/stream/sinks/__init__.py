"""The writers of the streaming pipeline: each sink takes every processed record once, then is closed.

* :mod:`.base`        - :class:`Sink`, the interface, and the helpers of the file-writing sinks.
* :mod:`.video`       - ``overlay.mp4`` (fragmented H.264) and ``masks.mkv`` (lossless FFV1).
* :mod:`.png`         - ``masks/*.png`` and ``overlays/*.png`` (one per frame; image folders by stem).
* :mod:`.index`       - ``outputs.csv``: input frame -> output files.
* :mod:`.report`      - per-frame timings -> ``latency.json`` / ``latency.csv``; the run's atomic JSON writes.
* :mod:`.report_html` - ``report.html`` (plots, sample frames).
* :mod:`.nifti`, :mod:`.dicom_seg`, :mod:`.coco` - the research formats of ``--masks``.
* :mod:`.registry`    - the sink factories by the names users type (``--masks png,video,nifti,dicom-seg,coco``),
  opened in one place for the write stage.
* :mod:`.encoders`    - the PyAV encoders and :class:`~.encoders.SinkError`.

The live views (browser, on-screen window) are sinks too: :mod:`textsam_eus.stream.view`.
The names below are re-exported, so ``from textsam_eus.stream.sinks import Sink`` keeps working.
This package must stay free of torch and of the model / engine packages.
"""

from .base import Sink, write_png
from .index import OutputIndexSink
from .png import MaskPngSink, OverlayPngSink
from .report import ReportSink
from .video import MaskVideoSink, OverlayVideoSink

__all__ = ["Sink", "OverlayVideoSink", "MaskVideoSink", "MaskPngSink", "OverlayPngSink", "OutputIndexSink",
           "ReportSink", "write_png"]
