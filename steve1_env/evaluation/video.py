"""Writing a trial's low-level frames to an mp4 file, frame by frame.

Frames go straight to the encoder, so a 3000-step trial never holds its frames in memory. The
file appears under its final name only when `VideoWriter.close` succeeds; an interrupted
trial leaves no half-written video behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.agent.base import Goal, SkillPolicy
from steve1_env.errors import ConfigurationError
from steve1_env.files import make_folder, write_error

VIDEO_FPS = 20  # Minecraft's tick rate: one frame per low-level step plays in real time


class VideoWriter:
    """Writes RGB uint8 frames ``(height, width, 3)`` to an mp4 (MPEG-4 Part 2) file.

    Args:
        path: Where the finished video goes; parent folders are created.
        fps: Frames per second of playback.
    """

    def __init__(self, path: str | os.PathLike[str], fps: int = VIDEO_FPS) -> None:
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._partial = self.path.with_name(self.path.stem + ".partial.mp4")
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def check_writable(self) -> None:
        """Creates the video's folder and proves a file can be written there.

        Call it before the episode, so a bad path fails before minutes of play, not after.

        Raises:
            ConfigurationError: If `path` is a folder, or its folder cannot be made or written
                (a file in the way, a read-only file system, a full disk).
        """
        if self.path.is_dir():
            raise ConfigurationError(
                f"The video path {self.path} is a folder; give a file name such as "
                f"{self.path / 'episode.mp4'}."
            )
        make_folder(self.path.parent, "the video folder", check_writable=True)

    def write(self, frame: Any) -> None:
        """Appends one RGB frame; every frame must have the first frame's size.

        Raises:
            ConfigurationError: If the frame is not ``(height, width, 3)`` or changes size.
        """
        import cv2

        array = np.asarray(frame)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ConfigurationError(
                f"Video frames must be RGB arrays (height, width, 3), got shape {array.shape}."
            )
        size = (int(array.shape[1]), int(array.shape[0]))
        if self._writer is None:
            make_folder(self.path.parent, "the video folder")
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self._partial), fourcc, self.fps, size)
            if not self._writer.isOpened():
                raise ConfigurationError(
                    f"OpenCV cannot write mp4 video to {self._partial}; check the folder is "
                    "writable and that opencv-python-headless is installed with its video codecs."
                )
            self._size = size
        elif size != self._size:
            raise ConfigurationError(
                f"Video frame {self.frames} is {size[0]}x{size[1]}, but the video is "
                f"{self._size[0]}x{self._size[1]}."  # type: ignore[index]
            )
        bgr = cv2.cvtColor(np.ascontiguousarray(array, dtype=np.uint8), cv2.COLOR_RGB2BGR)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> Path | None:
        """Finishes the file and moves it to `path`; returns it, or None if no frame came."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        # OpenCV reports no write error: a full disk shows as a missing or empty file.
        if not self._partial.is_file() or self._partial.stat().st_size == 0:
            self.discard()
            raise ConfigurationError(
                f"OpenCV could not finish the video {self._partial} (the disk may be full); "
                "free some space and run again."
            )
        try:
            os.replace(self._partial, self.path)
        except OSError as exc:
            self.discard()
            raise write_error(exc, self.path, "the video") from exc
        return self.path

    def discard(self) -> None:
        """Stops writing and deletes the unfinished file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        with contextlib.suppress(OSError):  # never written, or its folder is not there
            self._partial.unlink()


class FrameRecordingPolicy:
    """A `SkillPolicy` that shows every low-level frame to a `VideoWriter`, then acts as `inner`.

    Wrapping the policy rather than the world records the frames of any world, and leaves the
    world the policy was built for unchanged (the scripted oracle needs the synthetic world).
    The frame after the last action is not seen by the policy: write ``env.render()`` at the
    end.

    Args:
        inner: The policy that acts.
    """

    def __init__(self, inner: SkillPolicy) -> None:
        self.inner = inner
        self.device = inner.device
        self.writer: VideoWriter | None = None

    def initial_state(self, seed: int) -> Any:
        """The inner policy's initial state."""
        return self.inner.initial_state(seed)

    def act(self, obs: Mapping[str, Any], goal: Goal, state: Any) -> tuple[Any, Any]:
        """Writes ``obs["pov"]`` if a writer is set, then returns the inner policy's action."""
        if self.writer is not None:
            self.writer.write(obs["pov"])
        return self.inner.act(obs, goal, state)

    def close(self) -> None:
        """Closes the inner policy."""
        self.inner.close()
