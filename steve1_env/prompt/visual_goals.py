"""Visual goals: a 16-frame clip (an array, a video file, or one of the paper's prompts).

STEVE-1 follows a video as it follows text: the goal is MineCLIP's embedding of a 16-frame clip,
`MineCLIPVideo.encode_video` (no prior), pursued with the paper's visual ``cond_scale`` of 7.0
unless another is given. A goal spec is one of:

- a uint8 RGB array of shape ``(16, H, W, 3)`` (any H and W; resized as MineCLIP does);
- a video file: its last 16 frames, decoded with OpenCV, bounded before decoding;
- ``"paper:<name>"``: one of the paper's 11 visual prompts (`visual_prompts`), already an
  embedding, so no video tower is needed.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from steve1_env.agent.base import Goal
from steve1_env.errors import ConfigurationError
from steve1_env.files import open_regular_file
from steve1_env.prompt.visual_prompts import (
    PAPER_VISUAL_COND_SCALE,
    is_paper_spec,
    visual_goal_from_spec,
)
from steve1_env.validation import short_repr

CLIP_FRAMES = 16
"""Frames of a visual goal's clip (MineCLIP's clip length); a video's last 16 are used."""

VISUAL_COND_SCALE = PAPER_VISUAL_COND_SCALE
"""The guidance scale of visual goals unless one is given (the paper's 7.0)."""

MAX_CLIP_BYTES = 1 << 30
"""Largest video file read (1 GiB): a 3000-step trial at 640x360 is a few MiB."""

MAX_VIDEO_FRAMES = 100_000
"""Most frames decoded from one video (83 minutes of Minecraft at 20 frames a second)."""

MAX_CLIP_PIXELS = 4096 * 4096
"""Most pixels per frame accepted; Minecraft frames are at most a few hundred thousand."""

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
"""File endings read as videos when a goal spec is a path."""


def read_clip(path: str | os.PathLike[str], frames: int = CLIP_FRAMES) -> np.ndarray:
    """Decodes a video's last `frames` frames as uint8 RGB ``(frames, height, width, 3)``.

    The video is read front to back (seeking in mp4 is not frame-exact), keeping only the
    last `frames` frames, so memory stays bounded whatever its length.

    Args:
        path: The video file (any format OpenCV reads; the evaluation writes mp4).
        frames: How many frames to keep.

    Raises:
        ConfigurationError: If the file is missing, not a regular file, larger than
            `MAX_CLIP_BYTES`, not a video OpenCV can decode, has frames larger than
            `MAX_CLIP_PIXELS` or more than `MAX_VIDEO_FRAMES` frames, or has fewer than
            `frames` frames.
    """
    import cv2

    path = Path(path)
    try:
        os.close(open_regular_file(path, "video"))
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the video {path} ({exc}).") from exc
    if size > MAX_CLIP_BYTES:
        raise ConfigurationError(
            f"The video {path} is {size:,} bytes, more than the {MAX_CLIP_BYTES:,} accepted "
            "(MAX_CLIP_BYTES); cut the clip to its last seconds."
        )
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ConfigurationError(
                f"OpenCV cannot decode {path}; it must be a video file (mp4 as the evaluation "
                "writes), not damaged or truncated."
            )
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if width * height > MAX_CLIP_PIXELS:
            raise ConfigurationError(
                f"The video {path} is {width}x{height}, more than the {MAX_CLIP_PIXELS:,} "
                "pixels per frame accepted (MAX_CLIP_PIXELS); scale it down."
            )
        too_long = (
            f"The video {path} has more than {MAX_VIDEO_FRAMES:,} frames (MAX_VIDEO_FRAMES); "
            "cut it to its last seconds, which are what is scored."
        )
        if declared > MAX_VIDEO_FRAMES:
            raise ConfigurationError(too_long)
        kept: collections.deque[np.ndarray] = collections.deque(maxlen=frames)
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            if count > MAX_VIDEO_FRAMES:  # the declared count can be wrong
                raise ConfigurationError(too_long)
            kept.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if count < frames:
        raise ConfigurationError(
            f"The video {path} has {count} decodable frame(s), fewer than the {frames} a clip "
            "needs; give a longer video."
        )
    return np.stack(kept).astype(np.uint8, copy=False)


def check_clip(clip: Any, what: str = "A visual goal's clip") -> np.ndarray:
    """Returns `clip` as a uint8 ``(16, H, W, 3)`` array, or raises saying what was expected.

    Raises:
        ConfigurationError: If it is not 16 uint8 RGB frames.
    """
    try:
        array = np.asarray(clip) if isinstance(clip, np.ndarray | list | tuple) else None
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ConfigurationError(
            f"{what} must be {CLIP_FRAMES} uint8 RGB frames of one size, shape ({CLIP_FRAMES}, "
            f"H, W, 3); got frames numpy cannot stack ({exc})."
        ) from exc
    if (
        array is None
        or array.dtype != np.uint8
        or array.ndim != 4
        or array.shape[0] != CLIP_FRAMES
        or array.shape[3] != 3
    ):
        got = (
            f"shape {array.shape} dtype {array.dtype}"
            if array is not None
            else f"{type(clip).__name__} {short_repr(clip)}"
        )
        raise ConfigurationError(
            f"{what} must be {CLIP_FRAMES} uint8 RGB frames, shape ({CLIP_FRAMES}, H, W, 3); got "
            f"{got}. Cut a video to its last {CLIP_FRAMES} frames, or pass the video file."
        )
    if min(array.shape[1:3]) < 1:
        raise ConfigurationError(f"{what} has empty frames, shape {array.shape}.")
    # The limit a video file has: a strided view can claim frames far larger than its memory.
    if array.shape[1] * array.shape[2] > MAX_CLIP_PIXELS:
        raise ConfigurationError(
            f"{what} has {array.shape[2]}x{array.shape[1]} frames, more than the "
            f"{MAX_CLIP_PIXELS:,} pixels per frame accepted (MAX_CLIP_PIXELS); scale it down."
        )
    return array


def visual_goal(
    spec: Any,
    video_tower: Callable[[], Any],
    *,
    label: str | None = None,
    cond_scale: float | None = None,
    weights_dir: Any = None,
) -> Goal:
    """Returns the goal of a visual goal spec (an array clip, a video file or ``paper:<name>``).

    Args:
        spec: The clip, see the module docstring.
        video_tower: Returns the MineCLIP video tower (called only for clips and files).
        label: The goal's instruction text, which names it in ``info`` and picks its detector
            (default: ``visual:<name>``).
        cond_scale: Its guidance scale (default `VISUAL_COND_SCALE`).
        weights_dir: Where the paper's visual prompts are (default: the weights directory).

    Raises:
        ConfigurationError: If the spec is none of these, or its clip does not fit.
        WeightsError: If the paper's prompts are needed but not downloaded.
    """
    scale = VISUAL_COND_SCALE if cond_scale is None else cond_scale
    if isinstance(spec, str) and is_paper_spec(spec):
        embedding = visual_goal_from_spec(spec, weights_dir)
        return Goal(label or f"visual:{spec}", embedding, scale)
    if isinstance(spec, str | os.PathLike) and not isinstance(spec, np.ndarray):
        path = Path(spec)
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ConfigurationError(
                f"A visual goal given as text must be 'paper:<name>' or a video file "
                f"({', '.join(VIDEO_SUFFIXES)}), got {short_repr(spec)}."
            )
        clip, name = read_clip(path), path.name
    else:
        clip, name = check_clip(spec), "clip"
    embedding = video_tower().encode_video(clip)[0]
    return Goal(label or f"visual:{name}", embedding, scale)
