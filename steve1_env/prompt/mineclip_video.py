"""MineCLIP's video side: frames -> ViT features -> temporal pooling -> video embedding.

`MineCLIPVideo` holds the vision tower (ViT-B/16 at 160x256), the temporal pooling (pool type
``attn.d2.nh8.glusw``), the reward head (residual video adapter, logit scale) and, optionally,
the text tower of `steve1_env.prompt.mineclip`. All of it loads from the same ``attn.pth`` the
text tower uses (`load_mineclip_video`). STEVE-1's visual goal of a 16-frame clip is
`MineCLIPVideo.encode_video`; MineDojo's reward compares `MineCLIPVideo.logits_per_video`
over the task's prompt and negative prompts.

The checkpoint stores shared modules under several prefixes (``image_encoder.*`` is
``clip_model.vision_model.*`` and ``reward_head.clip_model.vision_model.*``; the reward head's
``clip_model`` is ``clip_model``). `model_state_from_checkpoint` accounts for every key:
each copy must hold the same tensor, and the model takes one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from steve1_env import precision
from steve1_env.agent.conversion import resize_frame
from steve1_env.errors import ConfigurationError, WeightsError
from steve1_env.prompt.mineclip import ResidualAttentionBlock, TextTower, TextTowerConfig
from steve1_env.weights import (
    WeightSource,
    check_state_dict,
    is_mirror_file,
    verify_known_digest,
    weight_source,
)

FRAME_SIZE = (160, 256)
"""``(height, width)`` of the frames MineCLIP sees (upstream resizes 360x640 ``pov`` to this)."""
FRAMES_PER_CLIP = 16
"""Frames in one clip: the last 16 frames make a visual goal or a MineCLIP score."""
PIXEL_MEAN = (0.3331, 0.3245, 0.3051)
"""Per-channel RGB mean of MineCLIP's frames, on the 0..1 scale."""
PIXEL_STD = (0.2439, 0.2493, 0.2873)
"""Per-channel RGB standard deviation of MineCLIP's frames, on the 0..1 scale."""
CHECKPOINT_ROOT = "model."
"""The prefix every key of MineCLIP's checkpoint ``state_dict`` carries."""


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive int, got {value!r}.")
    return value


@dataclass(frozen=True)
class VideoTowerConfig:
    """Sizes of the video side; the defaults are the released MineCLIP's (``attn.pth``).

    Attributes:
        width: Width of the vision transformer (768 released).
        layers: Its residual blocks (12).
        heads: Its attention heads; None for upstream's ``width // 64``.
        patch_size: Side of the square patches (16).
        frame_size: ``(height, width)`` of the input frames; positions are learned for the
            ``frame_size / patch_size`` grid (10x16 released) plus the class token.
        embed_dim: Width of frame, video and text embeddings (512).
        temporal_layers: Attention + feed-forward blocks of the temporal pooling (2).
        temporal_heads: Their attention heads (8).
        temporal_head_dim: Width of each of those heads (64, whatever `embed_dim` is).
        temporal_ff_mult: Hidden width of their feed-forward layers, in `embed_dim`s (4).
        max_frames: Frames the temporal pooling has positions for (32).
        frames_per_clip: Frames of a clip for `MineCLIPVideo.encode_video` (16).
    """

    width: int = 768
    layers: int = 12
    heads: int | None = None
    patch_size: int = 16
    frame_size: tuple[int, int] = FRAME_SIZE
    embed_dim: int = 512
    temporal_layers: int = 2
    temporal_heads: int = 8
    temporal_head_dim: int = 64
    temporal_ff_mult: int = 4
    max_frames: int = 32
    frames_per_clip: int = FRAMES_PER_CLIP
    grid: tuple[int, int] = field(init=False)
    """Patches per column and per row (derived)."""

    def __post_init__(self) -> None:
        for name in (
            "width",
            "layers",
            "patch_size",
            "embed_dim",
            "temporal_layers",
            "temporal_heads",
            "temporal_head_dim",
            "temporal_ff_mult",
            "max_frames",
            "frames_per_clip",
        ):
            _positive(getattr(self, name), f"VideoTowerConfig.{name}")
        heads = self.width // 64 if self.heads is None else self.heads
        _positive(heads, "VideoTowerConfig.heads")
        if self.width % heads:
            raise ConfigurationError(
                f"VideoTowerConfig.width ({self.width}) must be a multiple of heads ({heads})."
            )
        size = tuple(self.frame_size)
        if len(size) != 2 or any(_positive(s, "frame_size") % self.patch_size for s in size):
            raise ConfigurationError(
                f"VideoTowerConfig.frame_size must be (height, width), both multiples of "
                f"patch_size {self.patch_size}; got {self.frame_size!r}."
            )
        if self.frames_per_clip > self.max_frames:
            raise ConfigurationError(
                f"VideoTowerConfig.frames_per_clip ({self.frames_per_clip}) exceeds max_frames "
                f"({self.max_frames}), the positions the temporal pooling has."
            )
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "frame_size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "grid", (size[0] // self.patch_size, size[1] // self.patch_size))


# ------------------------------------------------------------------ frames


def resize_frames(frames: Any, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Resizes uint8 RGB frames to `size` as upstream does (OpenCV ``INTER_LINEAR``).

    Args:
        frames: ``(N, H, W, 3)`` or one ``(H, W, 3)`` frame, uint8 RGB, any ``H, W``.
        size: ``(height, width)`` of the result (MineCLIP's 160x256 by default).

    Returns:
        A new uint8 array ``(N, *size, 3)`` (``(*size, 3)`` for one frame).

    Raises:
        ConfigurationError: If `frames` are not uint8 RGB frames.
    """
    array = _as_frames(frames, "frames", allow_single=True)
    if array.ndim == 3:
        return resize_frame(array, size)
    return np.stack([resize_frame(frame, size) for frame in array])


def _as_frames(frames: Any, what: str, *, allow_single: bool = False) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    array = np.asarray(frames)
    shapes = "(N, H, W, 3)" + (" or (H, W, 3)" if allow_single else "")
    ndims = (3, 4) if allow_single else (4,)
    if array.dtype != np.uint8 or array.ndim not in ndims or array.shape[-1] != 3:
        raise ConfigurationError(
            f"{what} must be uint8 RGB frames of shape {shapes} (any H and W), got shape "
            f"{array.shape} dtype {array.dtype}. Pass the env's 'pov' frames as they come."
        )
    if 0 in array.shape:
        raise ConfigurationError(
            f"{what} must hold at least one non-empty frame, got {array.shape}."
        )
    return array


# ------------------------------------------------------------------ modules


class VisionTower(nn.Module):
    """Frames ``(N, 3, H, W)``, normalised -> frame features ``(N, embed_dim)``.

    CLIP's ViT: patches (a convolution without bias), a class token, learned positions for
    the patch grid, ``ln_pre``, residual blocks, ``ln_post`` on the class token, then
    ``projection``. Names follow the checkpoint's ``image_encoder.*``.
    """

    def __init__(self, config: VideoTowerConfig) -> None:
        super().__init__()
        width, tokens = config.width, 1 + config.grid[0] * config.grid[1]
        self.conv1 = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        # Small noise, so an untrained tower is not degenerate; a checkpoint replaces it.
        self.cls_token = nn.Parameter(torch.randn(width) * width**-0.5)
        self.pos_embed = nn.Parameter(torch.randn(tokens, width) * width**-0.5)
        self.ln_pre = nn.LayerNorm(width)
        assert config.heads is not None  # resolved by the config
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(width, config.heads) for _ in range(config.layers)]
        )
        self.ln_post = nn.LayerNorm(width)
        self.projection = nn.Parameter(torch.randn(width, config.embed_dim) * width**-0.5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encodes normalised frames ``(N, 3, H, W)`` of the configured size."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # (N, patches, width), row-major
        cls = self.cls_token.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x[:, 0]) @ self.projection


class TemporalAttention(nn.Module):
    """Multi-head self-attention over time, projections without bias."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attends ``(B, T, dim)`` with ``softmax(q k^T / sqrt(head_dim)) v``."""
        batch, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        )
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


class GluFeedForward(nn.Module):
    """``out(a * silu(gate))`` where ``(a, gate)`` are the two halves of ``proj(x)``."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * mult * dim)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the layer to ``(..., dim)``."""
        value, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(value * F.silu(gate))


class TemporalBlock(nn.Module):
    """Pre-norm attention, then pre-norm GLU feed-forward, each added to its input."""

    def __init__(self, config: VideoTowerConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = TemporalAttention(dim, config.temporal_heads, config.temporal_head_dim)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = GluFeedForward(dim, config.temporal_ff_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block to ``(B, T, dim)``."""
        x = x + self.attn(self.attn_norm(x))
        return x + self.ff(self.ff_norm(x))


class TemporalPooling(nn.Module):
    """Frame features ``(B, T, D)`` -> video embedding ``(B, D)`` (pool type ``attn.d2.nh8.glusw``).

    Learned absolute positions scaled by ``D ** -0.5`` are added, the blocks run, a final
    LayerNorm follows and the result is averaged over time.
    """

    def __init__(self, config: VideoTowerConfig) -> None:
        super().__init__()
        self.pos_embed = nn.Embedding(config.max_frames, config.embed_dim)
        self.blocks = nn.ModuleList([TemporalBlock(config) for _ in range(config.temporal_layers)])
        self.norm = nn.LayerNorm(config.embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Pools ``(B, T, D)`` features, ``T`` at most ``max_frames``."""
        positions = self.pos_embed.weight[: features.shape[1]]
        x = features + positions * features.shape[-1] ** -0.5
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(dim=1)


class MineCLIPVideo(nn.Module):
    """MineCLIP's video tower, reward head and (optionally) text tower, in one module.

    Built directly, the weights are random (seed torch's generator first for repeatable
    ones); `load_mineclip_video` loads the checkpoint's.

    Every public method runs without autograd, with autocast off and (on CUDA) without TF32,
    so float32 results are exact; inputs are moved to the model's device and dtype, and
    results come back as tensors of that device and dtype.

    Args:
        config: Video-side sizes (default: the released MineCLIP's).
        text_config: Text-tower sizes; None for no text tower (`encode_text` then refuses).
        device: Torch device of the parameters.
        dtype: Floating dtype of the parameters (default float32).

    Attributes:
        image_encoder: The `VisionTower`.
        temporal_encoder: The `TemporalPooling`.
        video_adapter: The reward head's MLP (``Linear, ReLU, Linear`` at the checkpoint's
            indices 0 and 3).
        video_residual_weight: ``r = sigmoid(video_residual_weight)`` keeps ``r`` of the raw
            video embedding in `adapt_video`.
        logit_scale: ``exp(logit_scale)`` multiplies the cosines in `logits_per_video`.
        text_model: The `TextTower`, or None.
    """

    def __init__(
        self,
        config: VideoTowerConfig | None = None,
        text_config: TextTowerConfig | None = None,
        *,
        device: Any = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or VideoTowerConfig()
        self.text_config = text_config
        if text_config is not None and text_config.embed_dim != config.embed_dim:
            raise ConfigurationError(
                f"The text tower's embed_dim ({text_config.embed_dim}) must equal the video "
                f"side's ({config.embed_dim}): logits compare the two embeddings."
            )
        dtype = torch.float32 if dtype is None else dtype
        if not dtype.is_floating_point:
            raise ConfigurationError(f"dtype must be a floating torch dtype, got {dtype}.")
        target = torch.device("meta") if str(device) == "meta" else precision.resolve_device(device)
        dim = config.embed_dim
        with target:
            self.image_encoder = VisionTower(config)
            self.temporal_encoder = TemporalPooling(config)
            self.video_adapter = nn.Sequential(
                nn.Linear(dim, dim), nn.ReLU(), nn.Identity(), nn.Linear(dim, dim)
            )
            self.video_residual_weight = nn.Parameter(torch.tensor(4.0))  # upstream's init
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
            self.text_model: TextTower | None = None
            if text_config is not None:
                self.text_model = TextTower(text_config)
                # These start at zero; noise keeps an untrained tower from being degenerate.
                for parameter in (self.text_model.pos_embed, self.text_model.projection):
                    nn.init.normal_(parameter, std=0.02)
        self.to(dtype=dtype).eval().requires_grad_(False)
        self._tokenizer: Any = None

    # ------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return self.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters."""
        return self.logit_scale.dtype

    def _exact(self) -> contextlib.AbstractContextManager[None]:
        return precision.exact_inference(self.device)

    # ------------------------------------------------------------- frames and clips
    def preprocess(self, frames: Any) -> torch.Tensor:
        """uint8 RGB frames ``(N, H, W, 3)`` of any size -> normalised ``(N, 3, *frame_size)``.

        Frames are resized with `resize_frames` (unless they already have the size), scaled to
        0..1 and normalised with `PIXEL_MEAN` and `PIXEL_STD` in float32, then cast to the
        model's dtype.

        Raises:
            ConfigurationError: If `frames` are not uint8 RGB frames ``(N, H, W, 3)``.
        """
        array = _as_frames(frames, "frames")
        if array.shape[1:3] != self.config.frame_size:
            array = resize_frames(array, self.config.frame_size)
        pixels = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        pixels = pixels.permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(PIXEL_MEAN, device=self.device).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD, device=self.device).view(3, 1, 1)
        pixels = (pixels - mean) / std
        return pixels.to(self.dtype)

    def encode_frames(self, frames: Any) -> torch.Tensor:
        """Encodes each frame: uint8 RGB ``(N, H, W, 3)`` of any size -> ``(N, embed_dim)``.

        Raises:
            ConfigurationError: If `frames` are not uint8 RGB frames ``(N, H, W, 3)``.
        """
        with self._exact():
            return self.image_encoder(self.preprocess(frames))

    def pool(self, features: Any) -> torch.Tensor:
        """The temporal pooling: per-frame features ``(B, T, D)`` -> video embeddings ``(B, D)``.

        ``encode_video(clip)`` equals ``pool(encode_frames(clip)[None])``, so a sliding window
        needs each frame encoded once.

        Args:
            features: Floating ``(B, T, embed_dim)`` (or one window ``(T, embed_dim)``), ``T``
                from 1 to ``max_frames``, oldest frame first.

        Raises:
            ConfigurationError: If the shape or dtype does not fit.
        """
        tensor = torch.as_tensor(features)
        if tensor.ndim == 2:
            tensor = tensor[None]
        dim, longest = self.config.embed_dim, self.config.max_frames
        if (
            not tensor.is_floating_point()
            or tensor.ndim != 3
            or tensor.shape[-1] != dim
            or not 1 <= tensor.shape[1] <= longest
            or tensor.shape[0] == 0
        ):
            raise ConfigurationError(
                f"pool() takes floating frame features of shape (B, T, {dim}) or (T, {dim}) "
                f"with 1 <= T <= {longest} (encode_frames' output, oldest first), got shape "
                f"{tuple(tensor.shape)} dtype {tensor.dtype}."
            )
        with self._exact():
            return self.temporal_encoder(tensor.to(self.device, self.dtype))

    def encode_video(self, clip: Any) -> torch.Tensor:
        """Encodes clips: uint8 RGB ``(B, 16, H, W, 3)`` or ``(16, H, W, 3)`` -> ``(B, D)``.

        This is STEVE-1's visual goal (one clip: shape ``(1, D)``) and the video embedding
        MineCLIP scores; ``16`` is ``frames_per_clip``.

        Raises:
            ConfigurationError: If the clip is not ``frames_per_clip`` uint8 RGB frames.
        """
        if isinstance(clip, torch.Tensor):
            clip = clip.detach().cpu().numpy()
        array = np.asarray(clip)
        given = array.shape
        frames = self.config.frames_per_clip
        if array.ndim == 4:
            array = array[None]
        if (
            array.dtype != np.uint8
            or array.ndim != 5
            or array.shape[1] != frames
            or array.shape[-1] != 3
            or 0 in array.shape
        ):
            raise ConfigurationError(
                f"A clip must be {frames} uint8 RGB frames: shape ({frames}, H, W, 3) or "
                f"(B, {frames}, H, W, 3), any H and W; got shape {given} dtype "
                f"{array.dtype}."
            )
        batch = array.shape[0]
        features = self.encode_frames(array.reshape(-1, *array.shape[2:]))
        return self.pool(features.view(batch, frames, -1))

    # ------------------------------------------------------------- reward head
    def _embeddings(self, value: Any, what: str) -> torch.Tensor:
        tensor = torch.as_tensor(value)
        if tensor.ndim == 1:
            tensor = tensor[None]
        dim = self.config.embed_dim
        if not tensor.is_floating_point() or tensor.ndim != 2 or tensor.shape[-1] != dim:
            raise ConfigurationError(
                f"{what} must be floating embeddings of shape (B, {dim}) or ({dim},), got "
                f"shape {tuple(tensor.shape)} dtype {tensor.dtype}."
            )
        return tensor.to(self.device, self.dtype)

    def adapt_video(self, video_features: Any) -> torch.Tensor:
        """The reward head's residual adapter: ``r v + (1 - r) adapter(v)``, ``(B, D)``.

        ``r = sigmoid(video_residual_weight)``. The text side has no adapter.

        Args:
            video_features: `encode_video`'s ``(B, D)`` (or ``(D,)``) embeddings.

        Raises:
            ConfigurationError: If the shape or dtype does not fit.
        """
        video = self._embeddings(video_features, "video_features")
        with self._exact():
            keep = torch.sigmoid(self.video_residual_weight)
            return keep * video + (1 - keep) * self.video_adapter(video)

    def logits_per_video(self, video_features: Any, text_features: Any) -> torch.Tensor:
        """``exp(logit_scale)`` times the cosines of adapted videos and texts, ``(B, T)``.

        The adapter is applied here: pass `encode_video`'s embeddings, not `adapt_video`'s.
        MineDojo's score of prompt ``j`` is ``softmax(logits, dim=-1)[:, j]``.

        Args:
            video_features: ``(B, D)`` from `encode_video` (or `pool`).
            text_features: ``(T, D)`` from `encode_text`.

        Raises:
            ConfigurationError: If a shape or dtype does not fit.
        """
        video = self.adapt_video(video_features)
        text = self._embeddings(text_features, "text_features")
        with self._exact():
            video = F.normalize(video, dim=-1)
            text = F.normalize(text, dim=-1)
            return self.logit_scale.exp() * video @ text.T

    # ------------------------------------------------------------- text
    def encode_text(self, texts: Sequence[str] | Any) -> torch.Tensor:
        """Text embeddings ``(T, D)`` of prompts (strings) or CLIP token rows ``(T, 77)``.

        Raises:
            ConfigurationError: If the model has no text tower or the input does not fit.
        """
        if self.text_model is None:
            raise ConfigurationError(
                "This MineCLIPVideo has no text tower (built with text_config=None or loaded "
                "with with_text=False); load it with the text tower to encode texts."
            )
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, Sequence) and all(isinstance(text, str) for text in texts):
            if self._tokenizer is None:
                from steve1_env.prompt.tokenizer import ClipTokenizer

                self._tokenizer = ClipTokenizer()
            rows = [self._tokenizer.tokenize(text) for text in texts]
            tokens = torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0)
        else:
            tokens = torch.as_tensor(texts)
        length = self.text_model.config.context_length
        if tokens.dtype != torch.int64 or tokens.ndim != 2 or tokens.shape[1] != length:
            raise ConfigurationError(
                f"encode_text() takes prompts (strings) or int64 token rows of shape (T, "
                f"{length}), got shape {tuple(tokens.shape)} dtype {tokens.dtype}."
            )
        with self._exact():
            return self.text_model(tokens.to(self.device))


# ------------------------------------------------------------------ checkpoint

_VISION_COPIES = (
    "image_encoder.",
    "clip_model.vision_model.",
    "reward_head.clip_model.vision_model.",
)
_TEXT_COPIES = ("clip_model.text_model.", "reward_head.clip_model.text_model.")
_TEMPORAL = "temporal_encoder.attn.model."
# Each of our temporal blocks is two x-transformers layers in the checkpoint, attention (2i)
# and feed-forward (2i + 1); a layer holds its pre-norm at ``.0.0`` and its branch at ``.1``.
_TEMPORAL_PARTS = {
    "attn_norm": (0, "0.0"),
    "attn": (0, "1"),
    "ff_norm": (1, "0.0"),
    "ff.proj": (1, "1.net.0.proj"),
    "ff.out": (1, "1.net.3"),
}
_TEMPORAL_BLOCK = re.compile(
    r"temporal_encoder\.blocks\.(\d+)\.(attn_norm|attn|ff_norm|ff\.proj|ff\.out)\.(.+)"
)


def _temporal_key(key: str) -> str:
    """Our temporal-pooling key -> the checkpoint's (x-transformers' layout)."""
    rest = key[len("temporal_encoder.") :]
    if rest == "pos_embed.weight":
        return f"{_TEMPORAL}pos_emb.emb.weight"
    if rest.startswith("norm."):
        return _TEMPORAL + rest
    match = _TEMPORAL_BLOCK.fullmatch(key)
    if match is None:
        raise AssertionError(f"no checkpoint key for {key}")  # a module this table lacks
    offset, inner = _TEMPORAL_PARTS[match[2]]
    return f"{_TEMPORAL}attn_layers.layers.{2 * int(match[1]) + offset}.{inner}.{match[3]}"


def checkpoint_copies(model_key: str) -> tuple[str, ...]:
    """The checkpoint keys (with ``model.``) that hold `MineCLIPVideo`'s parameter `model_key`.

    Shared modules have several: ``image_encoder.conv1.weight`` is also
    ``clip_model.vision_model.conv1.weight`` and ``reward_head.clip_model.vision_model...``.
    """
    if model_key.startswith("image_encoder."):
        rest = model_key[len("image_encoder.") :]
        keys: tuple[str, ...] = tuple(prefix + rest for prefix in _VISION_COPIES)
    elif model_key.startswith("text_model."):
        rest = model_key[len("text_model.") :]
        keys = tuple(prefix + rest for prefix in _TEXT_COPIES)
    elif model_key == "logit_scale":
        keys = ("clip_model.logit_scale", "reward_head.clip_model.logit_scale")
    elif model_key.startswith("video_adapter.") or model_key == "video_residual_weight":
        keys = ("reward_head." + model_key,)
    elif model_key.startswith("temporal_encoder."):
        keys = (_temporal_key(model_key),)
    else:
        raise AssertionError(f"no checkpoint key for {model_key}")
    return tuple(CHECKPOINT_ROOT + key for key in keys)


def checkpoint_layout(model: MineCLIPVideo) -> dict[str, str]:
    """Every checkpoint key of `model`'s graph -> the model parameter it holds.

    The model's text tower counts only if it has one; the released model with its text tower
    gives exactly the 788 keys of ``attn.pth``.
    """
    return {
        checkpoint_key: model_key
        for model_key in model.state_dict()
        for checkpoint_key in checkpoint_copies(model_key)
    }


def model_state_from_checkpoint(
    checkpoint: dict[str, Any], model: MineCLIPVideo, what: str = "MineCLIP"
) -> dict[str, torch.Tensor]:
    """Turns a MineCLIP checkpoint ``state_dict`` into `model`'s, accounting for every key.

    Args:
        checkpoint: ``{"model.<key>": tensor}`` as in ``attn.pth`` (unwrapped).
        model: A model of the checkpoint's sizes (the meta device will do); its keys and
            shapes are what the checkpoint must hold (the released model with its text
            tower: all 788 keys of ``attn.pth``).
        what: Names the checkpoint in error messages.

    Returns:
        ``model.state_dict()``'s keys -> the checkpoint's tensors.

    Raises:
        WeightsError: If a key is missing, unexpected or mis-shaped, or if the copies of a
            shared tensor differ.
    """
    layout = checkpoint_layout(model)
    shapes = model.state_dict()
    check_state_dict({key: shapes[name] for key, name in layout.items()}, checkpoint, what)
    copies: dict[str, list[str]] = {}
    for checkpoint_key, model_key in layout.items():
        copies.setdefault(model_key, []).append(checkpoint_key)
    differing = [
        f"{keys[0]} != {other}"
        for keys in copies.values()
        for other in keys[1:]
        if not _same_values(checkpoint[keys[0]], checkpoint[other])
    ]
    if differing:
        shown = "; ".join(differing[:4]) + (
            f" (+{len(differing) - 4} more)" if len(differing) > 4 else ""
        )
        raise WeightsError(
            f"The {what} checkpoint stores shared modules under several names, and they must "
            f"hold equal tensors, but {len(differing)} differ: {shown}. The file is damaged or "
            "was edited in one place only; download it again (`steve1-env weights download`)."
        )
    return {name: checkpoint[keys[0]] for name, keys in copies.items()}


def with_shared_copies(checkpoint: dict[str, Any], model: MineCLIPVideo) -> dict[str, Any]:
    """Restores the names of shared tensors a safetensors file stored once.

    safetensors keeps one name per shared tensor (``PyTorchModelHubMixin`` saves the mirror
    that way), while ``attn.pth`` names each copy (`checkpoint_copies`). A copy that is
    missing takes the tensor of a copy that is there; nothing present is changed.
    """
    filled = dict(checkpoint)
    copies: dict[str, list[str]] = {}
    for checkpoint_key, model_key in checkpoint_layout(model).items():
        copies.setdefault(model_key, []).append(checkpoint_key)
    for keys in copies.values():
        present = next((key for key in keys if key in checkpoint), None)
        if present is not None:
            for key in keys:
                filled.setdefault(key, checkpoint[present])
    return filled


def _same_values(first: torch.Tensor, second: torch.Tensor) -> bool:
    if first is second:
        return True
    if first.is_meta or second.is_meta:
        return True  # shapes only (checked already): a layout check without values
    return first.dtype == second.dtype and torch.equal(first, second)


def load_mineclip_video(
    path_or_weights_dir: str | os.PathLike[str] | None = None,
    device: Any = "cpu",
    dtype: torch.dtype | None = None,
    *,
    config: VideoTowerConfig | None = None,
    text_config: TextTowerConfig | None = None,
    with_text: bool = True,
) -> MineCLIPVideo:
    """Loads `MineCLIPVideo` from a MineCLIP checkpoint (``attn.pth``), safely and strictly.

    Args:
        path_or_weights_dir: The checkpoint file; a directory holding ``attn.pth``; or None
            for the weights directory (``$STEVE1_WEIGHTS_DIR``, as the text tower finds it).
        device: Torch device of the model.
        dtype: Its dtype (default float32, the checkpoint's).
        config: Video-side sizes (default: the released MineCLIP's).
        text_config: Text-tower sizes (default: the released MineCLIP's, 8 heads).
        with_text: Keep the text tower (needed by `MineCLIPVideo.encode_text`); without it
            its keys are still checked, then its weights are released.

    Raises:
        WeightsError: If the file is missing, unreadable, not the official file (md5, for a
            file named ``attn.pth``), or does not fit the model (`model_state_from_checkpoint`).
        UnsafeFileError: If loading the file would run code.
    """
    given = None if path_or_weights_dir is None else Path(path_or_weights_dir).expanduser()
    if given is None or given.is_dir():
        source = weight_source("mineclip", None, given)  # attn.pth, else the Hub mirror's
    elif given.is_file():
        source = WeightSource(given, "mineclip", is_mirror_file(given))
    else:
        raise WeightsError(
            f"{str(given)[:200]!r}: no such file or directory. Give MineCLIP's checkpoint "
            "(attn.pth), a directory holding it, or None for the weights directory (get the "
            "official files with `steve1-env weights download`)."
        )
    path = source.path
    if not source.mirror:  # the published md5 is attn.pth's, not the mirror's
        verify_known_digest(path)
    config = config or VideoTowerConfig()
    # The text tower's keys are checked even when it is dropped, so it is always built.
    model = MineCLIPVideo(config, text_config or TextTowerConfig(), device="meta")
    checkpoint = source.load()
    if source.mirror:
        checkpoint = with_shared_copies(checkpoint, model)
    state = model_state_from_checkpoint(checkpoint, model, f"MineCLIP ({path})")
    model.load_state_dict(state, strict=True, assign=True)
    if not with_text:
        model.text_model, model.text_config = None, None
    dtype = torch.float32 if dtype is None else dtype
    return model.to(precision.resolve_device(device), dtype).eval().requires_grad_(False)
