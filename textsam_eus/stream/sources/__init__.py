"""Frame sources for the streaming pipeline: what ``--source`` opens.

Every source is a context manager and an iterator of :class:`~textsam_eus.stream.record.FrameRecord` and exposes
``fps``, ``size`` (width, height), ``is_live``, ``n_frames`` and a ``stats`` dict (the base class:
:class:`~textsam_eus.stream.base.FrameSource`).

* :class:`~.files.VideoFileSource`    - recorded videos through PyAV (any container/codec FFmpeg reads), robust to
  corrupt / truncated files.
* :class:`~.files.ImageFolderSource`  - a folder of still images (sorted naturally).
* :class:`~.capture.CaptureSource`    - live capture cards / webcams / GStreamer pipelines through OpenCV, with
  bounded reconnects when the device drops out.
* :class:`~.av_live.AvLiveSource`     - V4L2 capture cards and FFmpeg ``lavfi`` graphs through PyAV.
* :class:`~.replay.RealtimeReplay`    - a file or folder replayed live at its own timestamps.
* :class:`~.dicom.DicomSource`        - a DICOM ultrasound file (multi-frame), frame by frame.
* :class:`~.phantom.PhantomSource`    - the synthetic EUS phantom (ground truth available as ``last_mask``).
* :func:`~.registry.open_source`      - a command-line string -> the source that reads it.

The names below are re-exported, so ``from textsam_eus.stream.sources import open_source`` keeps working.
This package must stay free of torch and of the engine packages (of ``model`` it imports only torch-free modules).
"""

from .av_live import AvLiveSource
from .capture import CaptureSource
from .dicom import DicomSource
from .files import ImageFolderSource, VideoFileSource, unique_stems
from .phantom import PhantomSource
from .registry import open_source
from .replay import RealtimeReplay

__all__ = ["AvLiveSource", "CaptureSource", "DicomSource", "ImageFolderSource", "PhantomSource", "RealtimeReplay",
           "VideoFileSource", "open_source", "unique_stems"]
