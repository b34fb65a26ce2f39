"""Cameras and video through OpenCV: device indices, video files, RTSP/HTTP streams and GStreamer
pipelines (a Jetson's CSI camera), each read in its own thread so that a stalled camera times out
instead of hanging the stream; and the stderr capture that keeps FFmpeg's and GStreamer's C-level
chatter out of the user's terminal. `sources.open_source` picks `VideoSource` for these.

Band order: OpenCV delivers BGR(A); frames here are RGB(A) (band 0 = red), the order of the bundled
RGB SRFs. 8/16-bit pixels are scaled to [0, 1].
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ssran_edge.errors import SourceError
from ssran_edge.runtime.frames import Frame, Source, require_file

log = logging.getLogger("ssran_edge.runtime")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def redact(spec: str) -> str:
    """Drop user:password from stream URLs so they never reach logs or error messages."""
    return re.sub(r"//[^/@\s]+@", "//***@", spec)


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR/BGRA -> RGB/RGBA; grey -> (H, W, 1). Other channel counts are left alone."""
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] in (3, 4):
        order = [2, 1, 0] + ([3] if image.shape[2] == 4 else [])
        return image[:, :, order]
    return image


def opencv() -> Any:
    """OpenCV, imported on first use: only video and image sources need it (opencv-python-headless).
    FFmpeg's own log (a broken file, a refused RTSP connection) is silenced unless -v: our error says
    what went wrong in one line."""
    if not log.isEnabledFor(logging.DEBUG):
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when FFmpeg starts
    try:
        import cv2
    except ImportError:
        raise SourceError("video and PNG/TIFF sources need OpenCV: pip install opencv-python-headless") from None
    return cv2


@contextmanager
def c_stderr_to_log():
    """Whatever C code prints on stderr (fd 2) meanwhile goes to the debug log instead (shown with -v).
    For short calls only, as opening a video file: fd 2 is the whole process's."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                log.debug("%s", line)


class _PendingRead:
    """One cv2.VideoCapture.read() running in its own thread, so that a read that blocks (a stalled
    camera, a dead link) can be given up on after a timeout instead of hanging the stream. A capture
    whose read is still blocked cannot be released from another thread; `abandon()` hands the release
    to the reading thread, which does it when (if ever) the read returns."""

    def __init__(self, cap: Any) -> None:
        self.cap = cap
        self.done = threading.Event()
        self.result: tuple[bool, Any] = (False, None)
        self._lock = threading.Lock()
        self._abandoned = False
        threading.Thread(target=self._run, name="ssran-camera-read", daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self.cap.read()
        except Exception:  # noqa: BLE001 - cv2.error from a broken capture is a failed read
            self.result = (False, None)
        with self._lock:
            self.done.set()
            release = self._abandoned
        if release:
            self.cap.release()

    def abandon(self) -> bool:
        """Give up on this read. True: the reading thread will release the capture; False: the read
        has already returned and the caller releases it."""
        with self._lock:
            if self.done.is_set():
                return False
            self._abandoned = True
            return True


class VideoSource(Source):
    """A camera (device index), network stream (RTSP/HTTP), GStreamer pipeline or video file through
    cv2.VideoCapture. Frames are RGB (OpenCV's BGR reversed): the 8/16-bit codes as delivered, sRGB-encoded
    (what cameras and video codecs hand out; the stream decodes them), or, with `scale` given, linear
    float32 values = codes x scale (a machine-vision camera set to a linear output).

    A live source that stops delivering is retried `retries` times with exponential backoff
    (backoff, 2*backoff, ... capped at max_backoff seconds), re-opening the capture between tries when
    `reconnect`; then SourceError. For a video file a failed read is the end of the stream.
    `live=None` decides from the spec (device, URL, pipeline: live; file: not).

    A live source's read that blocks longer than `read_timeout` seconds (a stalled camera) counts as a
    failed read: retry, back off, reconnect as above (None: wait forever). `interrupt()` (the pipeline's
    stop(), i.e. SIGINT/SIGTERM) cuts a blocked read or a backoff short: the stream then ends."""

    def __init__(self, spec: int | str, *, retries: int = 5, backoff: float = 0.5, max_backoff: float = 8.0,
                 reconnect: bool = True, scale: float | None = None, live: bool | None = None,
                 read_timeout: float | None = 10.0) -> None:
        if retries < 0 or backoff < 0 or max_backoff < 0:
            raise SourceError(f"video source {spec}: retries and backoff must be >= 0")
        if read_timeout is not None and not read_timeout > 0:
            raise SourceError(f"video source {spec}: read timeout must be > 0 seconds, got {read_timeout}")
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.read_timeout = read_timeout
        self.reconnect, self.scale = reconnect, scale
        self.encoding = "srgb" if scale is None else "linear"
        self.spec, self.api, auto_live, self.path = self._parse(spec)
        self.live = auto_live if live is None else bool(live)
        self.name = redact(str(spec))
        self._cap: Any = None
        self._pending: _PendingRead | None = None  # a read still blocked in its thread (stalled camera)
        self._interrupted = threading.Event()
        self._index = 0
        self._ended = False

    @staticmethod
    def _parse(spec: int | str) -> tuple[int | str, int, bool, Path | None]:
        """-> (what VideoCapture gets, API preference, live, file path if a file)."""
        cv2 = opencv()
        if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
            return int(spec), cv2.CAP_ANY, True, None
        text = str(spec).strip()
        if "!" in text:
            return text, cv2.CAP_GSTREAMER, True, None
        if text.lower().startswith(STREAM_SCHEMES):
            return text, cv2.CAP_ANY, True, None
        return text, cv2.CAP_ANY, False, Path(text)

    def _capture(self) -> Any:
        """A new cv2.VideoCapture, or None if it does not open."""
        cv2 = opencv()
        if isinstance(self.spec, str) and self.path is None and self.api == cv2.CAP_ANY:
            # Network streams: bounded waits, so a dead camera surfaces as a retry rather than a hang.
            read_ms = int(self.read_timeout * 1000) if self.read_timeout is not None else 10000
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(read_ms, 1)]
            cap = cv2.VideoCapture(self.spec, self.api, params)
        else:
            with c_stderr_to_log():  # OpenCV's own AVI parser prints to stderr ("Unexpected list type...")
                cap = cv2.VideoCapture(self.spec, self.api)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def open(self) -> None:
        if self._cap is not None:
            return
        cv2 = opencv()
        if self.path is not None:
            require_file(self.path, f"video {self.name}")
        if self.api == cv2.CAP_GSTREAMER and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SourceError(f"GStreamer pipeline {self.name!r}: this OpenCV build has no GStreamer backend")
        self._cap = self._capture()
        if self._cap is None:
            what = "video file (unknown codec or not a video)" if self.path is not None else "camera/stream"
            raise SourceError(f"cannot open {what} {self.name}")
        self._ended = False
        log.info("opened %s (%s, live=%s)", self.name, self._cap.getBackendName(), self.live)

    def close(self) -> None:
        self._drop_capture()

    def interrupt(self) -> None:
        """Stop waiting: a blocked read or a backoff returns at once and the stream ends (thread-safe)."""
        self._interrupted.set()

    def _drop_capture(self) -> None:
        cap, pending = self._cap, self._pending
        self._cap = self._pending = None
        if cap is not None and not (pending is not None and pending.abandon()):
            cap.release()  # (a capture stuck in a read is released by its reading thread instead)

    def _grab(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        if not self.live or self.read_timeout is None:
            ok, image = self._cap.read()
        else:
            if self._pending is None:
                self._pending = _PendingRead(self._cap)
            pending, deadline = self._pending, time.monotonic() + self.read_timeout
            while not pending.done.wait(min(0.1, max(deadline - time.monotonic(), 0.0))):
                if self._interrupted.is_set():
                    return None
                if time.monotonic() >= deadline:
                    log.warning("%s: read blocked for %.3g s (read timeout): camera stalled", self.name,
                                self.read_timeout)
                    return None  # the read stays pending: without reconnect the next try waits on it
            self._pending = None
            ok, image = pending.result
        return image if ok and image is not None and image.size else None

    def _retry(self) -> np.ndarray | None:
        """Live source failed a read: back off, reconnect, try again; give up after `retries`.
        None when interrupted."""
        delay = min(self.backoff, self.max_backoff)
        for attempt in range(1, self.retries + 1):
            log.warning("%s: no frame; retry %d/%d in %.2f s", self.name, attempt, self.retries, delay)
            if self._interrupted.wait(delay):
                return None
            delay = min(delay * 2.0, self.max_backoff)
            if self.reconnect:
                self._drop_capture()
                self._cap = self._capture()  # None when it does not reopen: counts as a failed try
            image = self._grab()
            if image is not None:
                log.info("%s: frames again after %d retries", self.name, attempt)
                return image
            if self._interrupted.is_set():
                return None
        raise SourceError(f"camera {self.name} stopped delivering frames after {self.retries} retries "
                          f"(backoff {self.backoff:g}..{self.max_backoff:g} s, reconnect={self.reconnect})")

    def read(self) -> Frame | None:
        if self._ended or self._interrupted.is_set():
            return None
        if self._cap is None:
            self.open()
        image = self._grab()
        if image is None:
            if not self.live:
                self._ended = True  # a file that stops reading has ended
                return None
            image = None if self._interrupted.is_set() else self._retry()
            if image is None:  # interrupted: the stream ends here
                self._ended = True
                return None
        stamp = time.monotonic()
        data, encoding = bgr_to_rgb(image), self.encoding
        if self.scale is not None or data.dtype.kind not in "u":  # a given scale: linear values, as stored
            data = data.astype(np.float32) * np.float32(self.scale if self.scale is not None else 1.0)
        if self.bands is None:
            self.bands = data.shape[2]
        pos_msec = float(self._cap.get(opencv().CAP_PROP_POS_MSEC)) if self._cap is not None else 0.0
        frame = Frame(self._index, data, stamp, encoding=encoding, meta={"pos_msec": pos_msec})
        self._index += 1
        return frame


