"""Writing a trial's low-level frames to an H.264 mp4 file, frame by frame.

Frames go straight to the encoder, so a 3000-step trial never holds its frames in memory. The
file appears under its final name only when `VideoWriter.close` succeeds; an interrupted
trial leaves no half-written video behind.

The video is H.264 (Constrained Baseline profile, yuv420p) in an mp4 with its index at the
front, the one combination every browser's ``<video>`` plays (Chromium refuses the MPEG-4
Part 2 that OpenCV's ``mp4v`` writes). It is encoded in-process by PyAV (the ``video``
extra), whose wheel bundles FFmpeg with libx264, so it works offline. PyAV rather than
imageio-ffmpeg (whose static ffmpeg binary has libx264 too): PyAV encodes in this process, so
a full disk or a refused frame is a Python exception here instead of a broken pipe to a
subprocess; it also decodes, so the tests check the codec, pixel format and frame count with
the library that wrote them (imageio-ffmpeg ships no ffprobe); and it writes the animated WebP
thumbnails too. Videos written this way are read back by OpenCV (visual goals, calibration),
whose wheel decodes H.264.

yuv420p stores colour at half resolution, so both sides of a frame must be even: a frame with
an odd side is padded by repeating its last row or column (nothing is cut or resized).

With ``overlay=True`` each frame carries a caption (`FrameCaption`: instruction, tick, the last
attempt's outcome and reason, inventory changes, MineCLIP score), drawn with OpenCV's
``putText`` (OpenCV is a core dependency; no font file or extra package needed). Frames
shorter than `OVERLAY_MIN_HEIGHT` are first enlarged by a whole factor (nearest neighbour),
so the text is legible on a 64x64 observation, but never past `OVERLAY_MAX_WIDTH` columns.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from steve1_env.agent.base import Goal, SkillPolicy
from steve1_env.errors import ConfigurationError, Steve1EnvError
from steve1_env.files import make_folder, write_error
from steve1_env.optional import import_optional, require_installed

VIDEO_FPS = 20  # Minecraft's tick rate: one frame per low-level step plays in real time
VIDEO_CODEC = "libx264"
"""The encoder: H.264, what browsers play."""
VIDEO_PIXEL_FORMAT = "yuv420p"
"""The pixel format every H.264 decoder (browsers, phones) reads."""
_ENCODER_OPTIONS = {"profile": "baseline", "crf": "18", "preset": "fast"}
OVERLAY_MIN_HEIGHT = 256
"""Frames shorter than this (in pixels) are enlarged before a caption is drawn on them."""
OVERLAY_MAX_WIDTH = 4096
"""Widest an enlarged frame gets (in pixels); a wider frame is enlarged less, or not at all."""
THUMBNAIL_FRAMES = 8
"""Most frames in a video's animated WebP thumbnail, spread over the whole video."""
THUMBNAIL_WIDTH = 128
"""Widest thumbnail, in pixels (smaller frames keep their size)."""
THUMBNAIL_SUFFIX = ".webp"
_THUMBNAIL_FPS = 4


def require_video_encoder(purpose: str = "Recording videos") -> None:
    """Raises `DependencyNotInstalledError` unless PyAV (the ``video`` extra) is installed.

    Call it before a run starts, so a missing encoder fails before minutes of play.
    """
    require_installed("av", "video", purpose)


def thumbnail_path(video: str | os.PathLike[str]) -> Path:
    """Returns where the thumbnail of `video` is written (beside it, ``.webp``)."""
    return Path(video).with_suffix(THUMBNAIL_SUFFIX)


@dataclass(frozen=True)
class FrameCaption:
    """What the overlay shows on one frame.

    Args:
        instruction: The instruction pursued.
        tick: Low-level ticks played before this frame.
        outcome: How the last high-level step or the trial ended (``"success (log)"``,
            ``"budget"``), or None while the first one runs.
        inventory_changes: Item -> count change since the attempt started (zeros are not
            shown).
        mineclip_score: The MineCLIP score of the last tick, when one is computed.
    """

    instruction: str
    tick: int
    outcome: str | None = None
    inventory_changes: Mapping[str, int] = field(default_factory=dict)
    mineclip_score: float | None = None

    def lines(self) -> list[str]:
        """Returns the caption's text, one line each."""
        lines = [self.instruction, f"tick {self.tick}"]
        if self.outcome is not None:
            lines.append(self.outcome)
        changes = [f"{k} {v:+d}" for k, v in sorted(self.inventory_changes.items()) if v]
        if changes:
            lines.append("inv " + ", ".join(changes))
        if self.mineclip_score is not None:
            lines.append(f"MineCLIP {self.mineclip_score:.3f}")
        return lines


def inventory_changes(start: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, int]:
    """Returns item -> count change from `start` to `now` (items that did not change left out)."""
    changes = {}
    for item in {*start, *now}:
        delta = int(now.get(item, 0)) - int(start.get(item, 0))
        if delta:
            changes[str(item)] = delta
    return changes


def overlay_factor(width: int, height: int) -> int:
    """Returns the whole factor a frame is enlarged by before its caption is drawn.

    Enough for `OVERLAY_MIN_HEIGHT` rows, but never past `OVERLAY_MAX_WIDTH` columns: a flat,
    wide frame (1 x 9000) is captioned as it is instead of growing into gigabytes.
    """
    wanted = math.ceil(OVERLAY_MIN_HEIGHT / max(height, 1))
    return max(1, min(wanted, OVERLAY_MAX_WIDTH // max(width, 1)))


def draw_caption(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Returns a copy of the RGB `frame`, enlarged if small, with `lines` drawn top left.

    The text is white on a darkened band, so it reads on any picture; a line too wide for
    the frame is cut with ``...``. OpenCV's fonts draw ASCII only: other characters show
    as ``?``.
    """
    import cv2

    factor = overlay_factor(frame.shape[1], frame.shape[0])
    image = np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1) if factor > 1 else frame
    image = np.ascontiguousarray(image, dtype=np.uint8).copy()
    if not lines:
        return image
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    (_, text_height), baseline = cv2.getTextSize("Ag", font, scale, thickness)
    line_height = text_height + baseline + 3
    width = image.shape[1] - 8
    fitted = [_fit(_ascii(line), width, font, scale, thickness) for line in lines]
    band = min(image.shape[0], 4 + line_height * len(fitted))
    image[:band] = (image[:band].astype(np.uint16) * 2 // 5).astype(np.uint8)  # darkened
    for i, line in enumerate(fitted):
        origin = (4, 2 + text_height + i * line_height)
        cv2.putText(image, line, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _fit(text: str, width: int, font: int, scale: float, thickness: int) -> str:
    import cv2

    def fits(candidate: str) -> bool:
        return cv2.getTextSize(candidate, font, scale, thickness)[0][0] <= width

    if fits(text):
        return text
    # The longest prefix that fits with "...", found by bisection: cutting one character at a
    # time measured the text once per character, every frame (seconds for a long inventory).
    low, high = 0, len(text)  # text[:low] + "..." fits (or low is 0); text[:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(text[:middle] + "...") else (low, middle)
    return text[:low] + "..."


def _even(frame: np.ndarray) -> np.ndarray:
    # yuv420p needs even sides: repeat the last row / column rather than cut or resize.
    pad_rows, pad_cols = frame.shape[0] % 2, frame.shape[1] % 2
    if not (pad_rows or pad_cols):
        return frame
    return np.pad(frame, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")


class _ThumbnailFrames:
    """Keeps at most 2n frames evenly spread over a stream of unknown length."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.stride = 1
        self.seen = 0
        self.kept: list[np.ndarray] = []

    def offer(self, frame: np.ndarray) -> None:
        if self.seen % self.stride == 0:
            self.kept.append(_shrunk(frame))
            if len(self.kept) == 2 * self.n:  # full: keep every other, sample half as often
                self.kept = self.kept[::2]
                self.stride *= 2
        self.seen += 1

    def frames(self) -> list[np.ndarray]:
        step = max(1, math.ceil(len(self.kept) / self.n))
        return self.kept[::step]


def _shrunk(frame: np.ndarray) -> np.ndarray:
    import cv2

    width = frame.shape[1]
    if width <= THUMBNAIL_WIDTH:
        return frame.copy()
    height = max(2, round(frame.shape[0] * THUMBNAIL_WIDTH / width))
    return cv2.resize(frame, (THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_AREA)


class VideoWriter:
    """Writes RGB uint8 frames ``(height, width, 3)`` to an H.264 (yuv420p) mp4 file.

    Args:
        path: Where the finished video goes; parent folders are created.
        fps: Frames per second of playback.
        overlay: Draw each frame's `FrameCaption` (given to `write`) on it.
        thumbnail: Also write an animated WebP of a few frames beside the video
            (`thumbnail_path`), for reports.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: int = VIDEO_FPS,
        *,
        overlay: bool = False,
        thumbnail: bool = False,
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.overlay = overlay
        self.thumbnail = thumbnail
        self.frames = 0
        self._partial = self.path.with_name(self.path.stem + ".partial.mp4")
        self._file: BinaryIO | None = None
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._thumbnail = _ThumbnailFrames(THUMBNAIL_FRAMES) if thumbnail else None

    def check_writable(self) -> None:
        """Checks the encoder is installed, creates the video's folder and proves it writable.

        Call it before the episode, so a bad path fails before minutes of play, not after.

        Raises:
            DependencyNotInstalledError: If PyAV (the ``video`` extra) is missing.
            ConfigurationError: If `path` is a folder, or its folder cannot be made or written
                (a file in the way, a read-only file system, a full disk).
        """
        require_video_encoder()
        if self.path.is_dir():
            raise ConfigurationError(
                f"The video path {self.path} is a folder; give a file name such as "
                f"{self.path / 'episode.mp4'}."
            )
        make_folder(self.path.parent, "the video folder", check_writable=True)

    def write(self, frame: Any, caption: FrameCaption | None = None) -> None:
        """Appends one RGB frame; every frame must have the first frame's size.

        Args:
            frame: The frame, ``(height, width, 3)``.
            caption: What the overlay shows on it (drawn only with ``overlay=True``).

        Raises:
            ConfigurationError: If the frame is not ``(height, width, 3)`` or changes size, or
                the file cannot be written (a full disk, a folder that went away).
            DependencyNotInstalledError: If PyAV (the ``video`` extra) is missing.
        """
        array = np.asarray(frame)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ConfigurationError(
                f"Video frames must be RGB arrays (height, width, 3), got shape {array.shape}."
            )
        size = (int(array.shape[1]), int(array.shape[0]))
        if self._container is None:
            self._open(size)
        elif size != self._size:
            raise ConfigurationError(
                f"Video frame {self.frames} is {size[0]}x{size[1]}, but the video is "
                f"{self._size[0]}x{self._size[1]}."  # type: ignore[index]
            )
        image = np.ascontiguousarray(array, dtype=np.uint8)
        if self.overlay and caption is not None:
            image = draw_caption(image, caption.lines())
        image = _even(image)
        if self._thumbnail is not None:
            self._thumbnail.offer(image)
        av = import_optional("av", "video", "Recording videos")
        try:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                self._container.mux(packet)
        except (OSError, av.FFmpegError) as exc:
            hint = ""
            if not self.frames and not isinstance(exc, OSError):  # the encoder opens here
                height, width = image.shape[:2]
                enlarged = (
                    " (enlarged for the overlay)" if image.shape[:2] != array.shape[:2] else ""
                )
                hint = (
                    f"Its frames are {width}x{height} pixels{enlarged}, which the H.264 encoder "
                    "refused: record smaller frames, or leave out the overlay, which enlarges "
                    "frames shorter than OVERLAY_MIN_HEIGHT."
                )
            raise self._failed(exc, self._partial, hint) from exc
        self.frames += 1

    def _failed(self, exc: Exception, path: Path, hint: str = "") -> Steve1EnvError:
        # The unfinished file goes; the disk's error keeps its errno's advice.
        self.discard()
        if isinstance(exc, OSError):
            return write_error(exc, path, "the video", hint)
        return ConfigurationError(
            f"FFmpeg could not encode the video {path} ({type(exc).__name__}: {exc}). {hint}"
        )

    def _open(self, size: tuple[int, int]) -> None:
        av = import_optional("av", "video", "Recording videos")
        make_folder(self.path.parent, "the video folder")
        width, height = size
        if self.overlay:  # what draw_caption makes of the frame
            factor = overlay_factor(width, height)
            width, height = width * factor, height * factor
        try:
            # A Python file, so the disk's errors reach here as OSError with their errno.
            self._file = open(self._partial, "w+b")  # noqa: SIM115 (closed in close/discard)
            # faststart: the index goes before the frames, so a browser starts playing (and
            # reads the duration for preload="metadata") without fetching the whole file.
            self._container = av.open(
                self._file, "w", format="mp4", options={"movflags": "+faststart"}
            )
            stream = self._container.add_stream(
                VIDEO_CODEC, rate=self.fps, options=dict(_ENCODER_OPTIONS)
            )
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = VIDEO_PIXEL_FORMAT
            self._stream = stream
        except (OSError, av.FFmpegError) as exc:
            raise self._failed(exc, self._partial) from exc
        self._size = size

    def close(self) -> Path | None:
        """Finishes the file and moves it to `path`; returns it, or None if no frame came.

        With ``thumbnail=True`` the thumbnail is written beside it first.

        Raises:
            ConfigurationError: If the file cannot be finished or moved (a full disk); the
                unfinished file is deleted.
        """
        if self._container is None:
            self.discard()
            return None
        av = import_optional("av", "video", "Recording videos")
        try:
            return self._finish(av)
        except BaseException:
            # A Ctrl-C while the encoder flushes or the thumbnail is written: the caller has
            # already let go of this writer, so nothing else would delete the partial file.
            self.discard()
            raise

    def _finish(self, av: Any) -> Path:
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            assert self._file is not None
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        except (OSError, av.FFmpegError) as exc:
            raise self._failed(exc, self._partial) from exc
        if not self._partial.is_file() or self._partial.stat().st_size == 0:
            self.discard()
            raise ConfigurationError(
                f"The video {self._partial} could not be finished: it is missing or empty "
                "(the disk may be full); free some space and run again."
            )
        thumbnail = None
        try:
            if self._thumbnail is not None:
                self._write_thumbnail()
                thumbnail = thumbnail_path(self.path)
            os.replace(self._partial, self.path)
        except BaseException as exc:
            if thumbnail is not None:  # no thumbnail of a video that is not there
                with contextlib.suppress(OSError):
                    thumbnail.unlink()
            if isinstance(exc, OSError | av.FFmpegError):
                raise self._failed(exc, self.path) from exc
            raise
        return self.path

    def _write_thumbnail(self) -> None:
        assert self._thumbnail is not None
        av = import_optional("av", "video", "Writing video thumbnails")
        target = thumbnail_path(self.path)
        partial = target.with_name(target.stem + ".partial" + THUMBNAIL_SUFFIX)
        frames = [_even(frame) for frame in self._thumbnail.frames()]
        try:
            with open(partial, "w+b") as file:
                container = av.open(file, "w", format="webp")
                stream = container.add_stream(
                    "libwebp_anim", rate=_THUMBNAIL_FPS, options={"loop": "0", "quality": "60"}
                )
                stream.height, stream.width = frames[0].shape[:2]
                stream.pix_fmt = VIDEO_PIXEL_FORMAT
                for frame in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
                container.close()
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise

    def discard(self) -> None:
        """Stops writing and deletes the unfinished file."""
        container, self._container = self._container, None
        file, self._file = self._file, None
        if container is not None:
            with contextlib.suppress(Exception):  # it failed already; the file goes anyway
                container.close()
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
        with contextlib.suppress(OSError):  # never written, or its folder is not there
            self._partial.unlink()


class FrameRecordingPolicy:
    """A `SkillPolicy` that shows every low-level frame to a `VideoWriter`, then acts as `inner`.

    Wrapping the policy rather than the world records the frames of any world, and leaves the
    world the policy was built for unchanged (the scripted oracle needs the synthetic world).
    The frame after the last action is not seen by the policy: write ``env.render()`` at the
    end (with `caption` for the overlay).

    Args:
        inner: The policy that acts.

    Attributes:
        writer: The video writer, or None to record nothing.
        outcome: What the overlay shows as the last step's end; set by the caller after each
            high-level step.
        mineclip_score: The MineCLIP score the overlay shows; set by the caller when known.
    """

    def __init__(self, inner: SkillPolicy) -> None:
        self.inner = inner
        self.device = inner.device
        self.writer: VideoWriter | None = None
        self.outcome: str | None = None
        self.mineclip_score: float | None = None
        self._ticks = 0
        self._start: Mapping[str, Any] | None = None
        self._last: tuple[str, Mapping[str, Any]] = ("", {})

    def initial_state(self, seed: int) -> Any:
        """The inner policy's initial state (a new episode: the overlay's tick restarts)."""
        self._ticks, self._start, self.outcome, self.mineclip_score = 0, None, None, None
        return self.inner.initial_state(seed)

    def caption(self, inventory: Mapping[str, Any] | None = None) -> FrameCaption:
        """Returns the overlay's caption for the latest frame seen (or the one after it).

        Args:
            inventory: The inventory now (the last frame's, after the policy's last action);
                default: the one the policy last saw.
        """
        instruction, seen = self._last
        inventory = seen if inventory is None else inventory
        return FrameCaption(
            instruction=instruction,
            tick=self._ticks,
            outcome=self.outcome,
            inventory_changes=inventory_changes(self._start or {}, inventory),
            mineclip_score=self.mineclip_score,
        )

    def act(self, obs: Mapping[str, Any], goal: Goal, state: Any) -> tuple[Any, Any]:
        """Writes ``obs["pov"]`` if a writer is set, then returns the inner policy's action."""
        if self.writer is not None:
            inventory = dict(obs.get("inventory", {}))
            if self._start is None or goal.instruction != self._last[0]:
                self._start = inventory  # a new attempt: changes count from here
            self._last = (goal.instruction, inventory)
            self.writer.write(obs["pov"], self.caption() if self.writer.overlay else None)
            self._ticks += 1
        return self.inner.act(obs, goal, state)

    def close(self) -> None:
        """Closes the inner policy."""
        self.inner.close()
