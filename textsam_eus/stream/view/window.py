"""The optional on-screen window (needs a non-headless OpenCV build and a display), and :class:`WindowSink`, which
shows each overlay in it (``--show``).

This module must stay free of torch and of the engine packages (of ``model`` it imports only the torch-free
errors module).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ...model.errors import UnavailableError
from ..record import FrameRecord
from ..sinks.base import Sink

__all__ = ["DisplayUnavailableError", "Window", "WindowSink", "opencv_has_gui", "HEADLESS_HINT"]


class DisplayUnavailableError(UnavailableError):
    """No on-screen window can be opened (headless OpenCV build or no display)."""


HEADLESS_HINT = ("this OpenCV build has no GUI support (opencv-python-headless). To show a "
                 "window, install the non-headless build: pip uninstall opencv-python-headless "
                 "&& pip install opencv-python")


def opencv_has_gui() -> bool:
    """True when cv2 was built with a GUI backend (GTK/Qt/Win32/Cocoa/Wayland)."""
    import cv2

    backends = ("GTK", "QT", "WIN32 UI", "COCOA", "WAYLAND", "FRAMEBUFFER")
    for line in cv2.getBuildInformation().splitlines():
        stripped = line.strip()
        if ":" not in stripped:
            continue
        key, value = (t.strip().upper() for t in stripped.split(":", 1))
        if key == "GUI":
            if value and value != "NONE":
                return True
        elif key.startswith(backends) and value.startswith("YES"):
            return True
    return False


class Window:
    """Optional on-screen window through ``cv2.imshow``.

    With ``strict=True`` (default) the constructor raises :class:`DisplayUnavailableError`
    when no window can be shown; with ``strict=False`` :meth:`show` just returns False.
    :meth:`show` returns False as well when the user closes the window or presses q / Esc.
    """

    def __init__(self, title: str = "TextSAM-EUS", strict: bool = True) -> None:
        self.title = title
        self.reason: str | None = self.unavailable_reason()
        self.available = self.reason is None
        self._opened = False
        self._closed = False
        if not self.available and strict:
            raise DisplayUnavailableError(f"cannot open window {title!r}: {self.reason}")

    @staticmethod
    def unavailable_reason() -> str | None:
        if not opencv_has_gui():
            return HEADLESS_HINT
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            return "no display (DISPLAY / WAYLAND_DISPLAY are not set)"
        return None

    def show(self, image_rgb: np.ndarray, wait_ms: int = 1) -> bool:
        if not self.available or self._closed:
            return False
        import cv2

        try:
            if not self._opened:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
                self._opened = True
            cv2.imshow(self.title, cv2.cvtColor(np.asarray(image_rgb), cv2.COLOR_RGB2BGR))
            key = cv2.waitKey(max(1, int(wait_ms))) & 0xFF
            if key in (ord("q"), 27):
                return False
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                return False
        except cv2.error as e:
            self.available = False
            self.reason = f"OpenCV window error: {e}"
            return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._opened:
            try:
                import cv2

                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WindowSink(Sink):
    """Shows each overlay; closing the window or pressing q / Esc asks the pipeline to stop."""

    def __init__(self, title: str = "TextSAM-EUS") -> None:
        self.window = Window(title)

    def write(self, record: FrameRecord) -> None:
        if not self.window.show(record.overlay):
            self.stop_requested = True

    def close(self) -> None:
        self.window.close()
