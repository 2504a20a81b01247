"""The STEVE-1 network: VPT's "2x" policy with goal conditioning, in our own PyTorch code.

Module and parameter names follow the official state dict (``net.*``, ``pi_head.*``,
``value_head.*``) so released weights load with ``strict=True``. `Steve1Network.forward` runs
one time step for N envs, classifier-free guidance included; it is built from three parts that
callers (tests, benchmarks) may also run alone: `Steve1Network.encode_frames` (the ImpalaCNN,
nearly all of the arithmetic), `Steve1Network.trunk` (goal, transformer memory, output layers)
and `Steve1Network.heads` (action log-probabilities and the value).

With guidance each env has two batch rows, interleaved per env (conditional, unconditional,
conditional, ...), so one env's memory is one contiguous slice of the batch memory:
`stack_memories` joins per-env memories, `env_memory` takes one env's rows back.

CPU kernel paths (both off unless the network is built with them; `NativeSteve1Policy` turns
them on, see its ``cpu_kernels`` argument, and docs/performance.md):

- ``small_batch_matmul``: `Linear` computes bfloat16 (and float16) CPU batches of up to
  `Linear.SMALL_BATCH_ROWS` rows as ``W @ x.T``, which streams each weight matrix once
  (faster at inference batches); float32 always uses `F.linear`, which MKL streams once at
  the batch sizes of inference too.
- ``batch_invariant_norm``: `SampleGroupNorm` runs on one CPU thread when PyTorch would split
  a reduction across threads, so a frame's features do not depend on the batch it is in.

Precision (`Precision`, `PRECISIONS`, applied by `Steve1Network.cast`): the network runs in one
dtype (``float32``, the exact reference; ``bfloat16``; ``float16``), or mixed
(``bfloat16-mixed``): the image encoder in bfloat16, every other linear layer with bfloat16
weights and inputs and float32 results, and the residual stream, norms, attention, memory,
log-softmax and guidance in float32. A `Linear` whose weight has another dtype than its input
computes in the weight's dtype and returns the input's, so no operation ever sees two dtypes.

Shapes: ``N`` envs, ``B`` batch rows, ``T`` time steps per call, ``H`` = ``hidsize`` (2048
when released).
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from steve1_env.agent.conversion import N_BUTTON_ACTIONS, N_CAMERA_ACTIONS
from steve1_env.errors import ConfigurationError
from steve1_env.precision import GOAL_DIM

CNN_OUTPUT = 256
RELATIVE_BASES = 10
"""Learned relative-position basis functions per attention layer (``b_nd`` rows)."""

_REQUIRED_KWARGS = (
    "hidsize", "attention_heads", "impala_width", "impala_chans", "n_recurrence_layers",
    "timesteps", "attention_memory_size", "recurrence_type",
)  # fmt: skip


def _positive(kwargs: Mapping[str, Any], key: str) -> int:
    value = kwargs[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigurationError(f"policy kwarg {key} must be a positive integer, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class NetworkConfig:
    """The architecture, from the ``policy_kwargs`` of a VPT ``.model`` file.

    Only the released STEVE-1 architecture is supported: the kwargs that select anything else
    (an LSTM, batch norm, ...) are checked by `from_policy_kwargs`.
    """

    hidsize: int = 2048
    impala_width: int = 8
    impala_chans: tuple[int, ...] = (16, 32, 32)
    attention_heads: int = 16
    n_blocks: int = 4
    pointwise_ratio: int = 4
    memory: int = 128
    """Frames of the past each step attends to (``attention_memory_size - timesteps``)."""
    img_size: int = 128
    temperature: float = 2.0

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of the three ImpalaCNN stacks."""
        return tuple(self.impala_width * c for c in self.impala_chans)

    @classmethod
    def from_policy_kwargs(
        cls, policy_kwargs: Mapping[str, Any], pi_head_kwargs: Mapping[str, Any] | None = None
    ) -> NetworkConfig:
        """Builds the config from a ``.model`` file's kwargs, rejecting unsupported variants.

        The kwargs that define the architecture must be present (upstream's defaults for them
        describe another network); the rest default to the released values.

        Raises:
            ConfigurationError: If the kwargs are incomplete, invalid, or describe an
                architecture this implementation does not provide; the message names the key.
        """
        missing = [key for key in _REQUIRED_KWARGS if key not in policy_kwargs]
        if missing:
            raise ConfigurationError(
                f"policy kwargs lack {', '.join(missing)}; pass the kwargs of a VPT .model file "
                "(['model']['args']['net']['args'])."
            )
        expected = {
            "recurrence_type": "transformer",
            "attention_mask_style": "clipped_causal",
            "use_pointwise_layer": True,
            "pointwise_use_activation": False,
            "use_pre_lstm_ln": False,
            "recurrence_is_residual": True,
            "init_norm_kwargs": {"batch_norm": False, "group_norm_groups": 1},
            "impala_kwargs": {"post_pool_groups": 1},
            "first_conv_norm": False,
        }
        for key, value in expected.items():
            if key in policy_kwargs and policy_kwargs[key] != value:
                raise ConfigurationError(
                    f"Unsupported STEVE-1 architecture: {key}={policy_kwargs[key]!r}; this "
                    f"implementation provides the released one ({key}={value!r})."
                )
        img_shape = tuple(policy_kwargs.get("img_shape", (128, 128, 3)))
        if len(img_shape) != 3 or img_shape[0] != img_shape[1] or img_shape[2] != 3:
            raise ConfigurationError(f"img_shape must be (S, S, 3), got {img_shape}.")
        if img_shape[0] % 8:
            raise ConfigurationError(
                f"img_shape sides must be multiples of 8 (three 2x poolings), got {img_shape}."
            )
        chans = policy_kwargs["impala_chans"]
        if (
            not isinstance(chans, Sequence)
            or len(chans) != 3
            or not all(isinstance(c, numbers.Integral) and int(c) > 0 for c in chans)
        ):
            raise ConfigurationError(f"impala_chans must be 3 positive integers, got {chans!r}.")
        memory = _positive(policy_kwargs, "attention_memory_size") - _positive(
            policy_kwargs, "timesteps"
        )
        if memory < 1:
            raise ConfigurationError(
                "attention_memory_size must exceed timesteps (the memory is their difference)."
            )
        # STEVE-1 samples at temperature 2; a .model file without the option gets that.
        temperature = float((pi_head_kwargs or {}).get("temperature", 2.0))
        if not temperature > 0:
            raise ConfigurationError(f"temperature must be positive, got {temperature}.")
        config = cls(
            hidsize=_positive(policy_kwargs, "hidsize"),
            impala_width=_positive(policy_kwargs, "impala_width"),
            impala_chans=tuple(int(c) for c in chans),
            attention_heads=_positive(policy_kwargs, "attention_heads"),
            n_blocks=_positive(policy_kwargs, "n_recurrence_layers"),
            pointwise_ratio=_positive({"pointwise_ratio": 4, **policy_kwargs}, "pointwise_ratio"),
            memory=memory,
            img_size=int(img_shape[0]),
            temperature=temperature,
        )
        if config.hidsize % config.attention_heads:
            raise ConfigurationError(
                f"hidsize {config.hidsize} is not divisible by attention_heads "
                f"{config.attention_heads}."
            )
        return config


RELEASED_CONFIG = NetworkConfig()
"""The architecture of ``2x.model``, the one STEVE-1 was released with."""


@dataclass(frozen=True)
class Precision:
    """Which dtype each part of the network computes in.

    Attributes:
        name: What `PRECISIONS` and the policy's ``dtype=`` call it.
        activations: The residual stream, norms, attention and its memory, the heads'
            log-softmax and the guidance combination; the goal is cast to it.
        matmuls: The weights of the linear layers outside the image encoder, and their
            inputs for the product (bfloat16 products accumulate in float32 on CPU and GPU);
            each result is returned in `activations`.
        encoder: The whole ImpalaCNN (convolutions, norms, pooling and its dense layer).
    """

    name: str
    activations: torch.dtype
    matmuls: torch.dtype
    encoder: torch.dtype

    @property
    def is_mixed(self) -> bool:
        """Whether some part computes in another dtype than the activations."""
        return not self.activations == self.matmuls == self.encoder


def _uniform(name: str, dtype: torch.dtype) -> Precision:
    return Precision(name, dtype, dtype, dtype)


PRECISIONS: dict[str, Precision] = {
    "float32": _uniform("float32", torch.float32),
    "bfloat16": _uniform("bfloat16", torch.bfloat16),
    "float16": _uniform("float16", torch.float16),
    "bfloat16-mixed": Precision(
        "bfloat16-mixed", torch.float32, matmuls=torch.bfloat16, encoder=torch.bfloat16
    ),
}
"""The precisions a network can be cast to (`Steve1Network.cast`); float32 is the exact one."""


class Linear(nn.Linear):
    """`nn.Linear` that can compute small reduced-precision CPU batches as ``W @ x.T`` (opt-in).

    With the weight as the left operand, oneDNN streams a bfloat16 weight once for all rows, at
    about 27 GB/s here, 15-20% faster than `F.linear`. float32 weights always use `F.linear`:
    on torch 2.13 MKL streams them once as well for the two rows of a guided env, twice as
    fast as ``W @ x.T`` there (`benchmarks/bench_policy.py` re-creates the previous release's
    ``W @ x.T`` float32 for comparison). One form per dtype, whatever the number of rows, so a
    row's numbers do not depend on the batch it is in (with the tiny test network, bit for
    bit; at full size MKL's kernels round batches of other sizes differently).

    A weight of another dtype than the input (a mixed `Precision`) computes the product in
    the weight's dtype; the result is returned in the input's dtype.

    Attributes:
        small_batch_rows: Up to this many rows the ``W @ x.T`` form is used for bfloat16 and
            float16 weights; 0 (the default) is plain `F.linear`.
            `Steve1Network.use_cpu_kernels` sets it.
    """

    SMALL_BATCH_ROWS = 16
    """The batch size up to which the ``W @ x.T`` form is used when it is turned on."""

    small_batch_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the layer; the result has the input's dtype.

        An input of another dtype than the weight (a mixed `Precision`) is cast to the
        weight's dtype for the product, and the bias is added in the input's dtype.
        """
        weight, bias = self.weight, self.bias
        mixed = x.dtype != weight.dtype
        out_dtype = x.dtype
        if mixed:
            x = x.to(weight.dtype)
        fused_bias = bias if bias is not None and bias.dtype == weight.dtype else None
        rows = x.numel() // x.shape[-1]
        if x.device.type != "cpu" or rows > self.small_batch_rows or x.dtype == torch.float32:
            out = F.linear(x, weight, fused_bias)
        else:
            flat = x.reshape(rows, x.shape[-1]).T
            if fused_bias is None:
                out = weight @ flat
            else:
                out = torch.addmm(fused_bias[:, None], weight, flat)
            out = out.T.reshape(*x.shape[:-1], self.out_features)
        if mixed:
            out = out.to(out_dtype)
        if bias is not None and fused_bias is None:
            out = out + bias.to(out.dtype)
        return out


class SampleGroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` whose result for a sample can be made independent of its batch (opt-in).

    PyTorch's CPU kernel gives each (sample, group) to one thread when their number is a
    multiple of the thread count, and otherwise splits reductions across threads, which rounds
    differently. With `batch_invariant` set, other batches run on one thread, so a frame
    encoded alone (shared by the guidance branches) or with other envs gets the numbers it gets
    in a two-row batch, what the official agent runs (on two threads or fewer). Note that
    `torch.set_num_threads` is process-wide: another thread running torch at that moment also
    runs single-threaded.

    Attributes:
        batch_invariant: Whether CPU batches that PyTorch would split run on one thread; off
            by default. `Steve1Network.use_cpu_kernels` sets it.
    """

    batch_invariant = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises `x` as `nn.GroupNorm` does."""
        threads = torch.get_num_threads()
        if (
            not self.batch_invariant
            or x.device.type != "cpu"
            or (x.shape[0] * self.num_groups) % threads == 0
        ):
            return super().forward(x)
        torch.set_num_threads(1)
        try:
            return super().forward(x)
        finally:
            torch.set_num_threads(threads)


class NormedLayer(nn.Module):
    """Optional norm over the input, a conv or linear layer, then optionally ReLU.

    The layer has a bias exactly when there is no norm (the norm's shift plays its role).
    """

    def __init__(self, layer: nn.Module, norm: nn.Module | None, relu: bool = True) -> None:
        super().__init__()
        self.norm = norm
        self.layer = layer
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies norm, layer and activation."""
        if self.norm is not None:
            x = self.norm(x)
        x = self.layer(x)
        # In place: the layer's output is a fresh tensor, and this saves an allocation per call.
        return F.relu(x, inplace=True) if self.relu else x


def _conv(in_channels: int, out_channels: int, norm: bool, relu: bool = True) -> NormedLayer:
    layer = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm)
    return NormedLayer(layer, SampleGroupNorm(1, in_channels) if norm else None, relu)


def _dense(in_features: int, out_features: int, relu: bool = True) -> NormedLayer:
    layer = Linear(in_features, out_features, bias=False)
    return NormedLayer(layer, nn.LayerNorm(in_features), relu)


class ResidualConvBlock(nn.Module):
    """``x + conv1(conv0(x))`` with pre-norm, ReLU convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = _conv(channels, channels, norm=True)
        self.conv1 = _conv(channels, channels, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block."""
        return x + self.conv1(self.conv0(x))


class DownStack(nn.Module):
    """Conv, ReLU, 3x3 max-pool with stride 2, GroupNorm, two residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, first_norm: bool) -> None:
        super().__init__()
        # Its ReLU is applied after the pooling (max and ReLU commute): a quarter of the work.
        self.firstconv = _conv(in_channels, out_channels, norm=first_norm, relu=False)
        self.n = SampleGroupNorm(1, out_channels)
        self.blocks = nn.ModuleList([ResidualConvBlock(out_channels) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halves the spatial size."""
        x = F.max_pool2d(self.firstconv(x), kernel_size=3, stride=2, padding=1)
        x = self.n(F.relu(x, inplace=True))
        for block in self.blocks:
            x = block(x)
        return x


class ImpalaCNN(nn.Module):
    """Three down-stacks and a dense layer: ``(N, 3, S, S)`` floats -> ``(N, 256)``.

    Attributes:
        channels_last: Whether the convolution weights (and so the inputs `ImageEncoder`
            gives) are in the ``channels_last`` memory format; `Steve1Network.cast` sets it.
    """

    channels_last = False

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        channels = (3, *config.channels)
        # The first convolution sees raw pixels and has no norm.
        self.stacks = nn.ModuleList(
            [DownStack(channels[i], channels[i + 1], first_norm=i > 0) for i in range(3)]
        )
        side = config.img_size // 8
        self.dense = _dense(channels[-1] * side * side, CNN_OUTPUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encodes images (channels first)."""
        for stack in self.stacks:
            x = stack(x)
        return self.dense(x.flatten(1))  # channel-major: C, H, W


class ImageEncoder(nn.Module):
    """uint8 HWC frames -> ``(N, H)`` features (post-ReLU)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.cnn = ImpalaCNN(config)
        self.linear = _dense(CNN_OUTPUT, config.hidsize)

    def weight_dtype(self) -> torch.dtype:
        """The dtype the ImpalaCNN computes in (frames are cast to it)."""
        return next(self.cnn.parameters()).dtype

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Encodes ``(N, S, S, 3)`` uint8 frames; features have the activations' dtype."""
        cnn = self.cnn
        x = frames.permute(0, 3, 1, 2).to(self.weight_dtype()) / 255.0
        if cnn.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        activations = next(self.linear.parameters()).dtype  # its LayerNorm's
        return self.linear(cnn(x).to(activations))


class TapePosition(NamedTuple):
    """Where a memory's window ends on its `MemoryTape`."""

    tape: MemoryTape
    end: int


class AttentionMemory(NamedTuple):
    """One attention layer's recurrent state for a batch (``M`` remembered frames).

    Attributes:
        valid: ``(B, M)`` bool: which remembered frames may be attended to.
        keys: ``(B, heads, M, head_dim)`` their keys, oldest first (kept split by head so the
            attention product reads them without a copy).
        values: ``(B, heads, M, head_dim)`` their values.
        tape: Where ``keys`` and ``values`` end on the tape they are windows of, if any (the
            next step then extends them in place; see `MemoryTape`). Only an optimisation:
            a memory without one behaves the same.
    """

    valid: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    tape: TapePosition | None = None


class TimeGeometry(NamedTuple):
    """Where each key lies in time relative to each query, for T queries after M memories.

    Attributes:
        distance: ``(T, M + T)`` frames key k lies before query j (negative: after).
        band: ``(T, M + T)`` bool: ``0 <= distance < M``, what a query may see.
    """

    distance: torch.Tensor
    band: torch.Tensor

    @classmethod
    def build(cls, steps: int, memory: int, device: torch.device) -> TimeGeometry:
        """Computes the geometry of `steps` queries after `memory` remembered frames."""
        query_at = torch.arange(steps, device=device) + memory
        distance = query_at[:, None] - torch.arange(memory + steps, device=device)[None, :]
        return cls(distance, (distance >= 0) & (distance < memory))


TAPE_FRAMES = 4
"""A memory tape has room for this many times the frames one step attends to."""


class MemoryTape:
    """Keys and values of one attention layer, written frame after frame (``(B, heads, C, d)``).

    Copying the ``(B, heads, M, d)`` memory every step is a cold read and write of about 2 MB
    per tensor at full size (2.9 ms of a 40 ms fast-mode step). A tape has room for `C`
    frames and records how far it is written; a memory that is a window ending there (the
    state the previous step returned) gets the next frames written after it in place.

    Attributes:
        keys: The key slots.
        values: The value slots.
        written: How many frames of the tape are written.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, written: int) -> None:
        self.keys, self.values, self.written = keys, values, written
        self._lock = threading.Lock()

    def claim(self, end: int, steps: int) -> bool:
        """Reserves the `steps` slots after `end` if the writing ends there; False if not.

        Atomic: of two threads stepping the same state, one writes in place and the other
        copies (checking `written` and then writing would let both write the same slots).
        """
        with self._lock:
            if self.written != end or end + steps > self.keys.shape[2]:
                return False
            self.written = end + steps
            return True

    def __getstate__(self) -> dict[str, Any]:
        """The tensors and the count (a lock is not copied: a copy gets its own)."""
        return {"keys": self.keys, "values": self.values, "written": self.written}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restores a copy (`copy.deepcopy`, pickling) with a new lock."""
        self.keys, self.values, self.written = state["keys"], state["values"], state["written"]
        self._lock = threading.Lock()


def _writable(tape: MemoryTape, keys: torch.Tensor) -> bool:
    """Whether `keys` may be written into `tape` in place.

    Not when autograd is involved: a step that kept its window for the backward pass must
    not see it written (its version changes), so a tape or frames with a gradient history
    start a new tape. Nor when the tape was made in inference mode and this step is not
    (PyTorch refuses in-place writes to inference tensors outside it).
    """
    return (
        tape.keys.dtype == keys.dtype
        and tape.keys.device == keys.device
        and not (tape.keys.requires_grad or keys.requires_grad)
        and (torch.is_inference_mode_enabled() or not tape.keys.is_inference())
    )


def _extend(
    memory: AttentionMemory, keys: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, TapePosition]:
    """Returns ``cat([memory.keys, keys])`` and the same for values, along the frame axis.

    The memory's window is extended in place when it ends where its tape's writing ends;
    any other memory (a state used a second time, one stacked from several envs, a copy, a
    first step) starts a new tape with a copy. No window of any state covers a slot that is
    written later, so states stay immutable and can be reused (branched).

    Only a memory that came from a step (it has a tape) gets a tape with room to grow: one
    stacked from several envs is copied again at their next step anyway, and would hold
    `TAPE_FRAMES` times its size for nothing (GPU memory, at a vector env's batch sizes).
    Frames with a gradient history get none either (their tape is never written in place).
    """
    remembered, steps = memory.keys.shape[2], keys.shape[2]
    position = memory.tape
    if position is not None:
        tape, end = position
        if _writable(tape, keys) and tape.claim(end, steps):
            tape.keys[:, :, end : end + steps].copy_(keys)
            tape.values[:, :, end : end + steps].copy_(values)
            start = end - remembered
            window = slice(start, end + steps)
            return (
                tape.keys[:, :, window],
                tape.values[:, :, window],
                TapePosition(tape, end + steps),
            )
    batch, heads, _, width = memory.keys.shape
    room = TAPE_FRAMES if position is not None and not keys.requires_grad else 1
    shape = (batch, heads, room * (remembered + steps), width)
    tape = MemoryTape(keys.new_empty(shape), values.new_empty(shape), remembered + steps)
    for slots, old, new in ((tape.keys, memory.keys, keys), (tape.values, memory.values, values)):
        slots[:, :, :remembered].copy_(old)
        slots[:, :, remembered : remembered + steps].copy_(new)
    window = slice(0, remembered + steps)
    return tape.keys[:, :, window], tape.values[:, :, window], TapePosition(tape, tape.written)


class RelativeAttention(nn.Module):
    """Multi-head self-attention over the current frames and a memory of past frames.

    Logits are ``q . k / head_dim`` (not ``sqrt(head_dim)``) plus a learned bias for how many
    frames back the key is: per head, ``r_layer(x)`` weights ``RELATIVE_BASES`` basis rows of
    ``b_nd`` indexed by that distance. The output adds the projection to its input.

    With `fuse_projections`, the four input projections (q, k, v, r) are one product: their
    weights become views of one matrix, so the state dict is unchanged.
    """

    def __init__(self, hidsize: int, heads: int, memory: int) -> None:
        super().__init__()
        self.heads, self.memory = heads, memory
        self.q_layer = Linear(hidsize, hidsize)
        self.k_layer = Linear(hidsize, hidsize, bias=False)
        self.v_layer = Linear(hidsize, hidsize, bias=False)
        self.proj_layer = Linear(hidsize, hidsize)
        self.r_layer = Linear(hidsize, RELATIVE_BASES * heads)
        self.b_nd = nn.Parameter(torch.zeros(RELATIVE_BASES, memory))
        # The fused layer and the storage its parts were views of, in a tuple so that it is
        # not a submodule (no state-dict keys of its own).
        self._fused: tuple[Linear, tuple[int, ...]] | None = None

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        # (B, L, heads * d) -> (B, heads, L, d)
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    def _projections(self) -> tuple[Linear, Linear, Linear, Linear]:
        return self.q_layer, self.k_layer, self.v_layer, self.r_layer

    def fuse_projections(self, enabled: bool) -> None:
        """Computes q, k, v and r in one product (or again in four, when not `enabled`).

        One product of a 6304-row matrix instead of four saves about 1.4 ms of a 40 ms
        fast-mode step (a quarter of the operations, longer weight streams). The weights and
        biases become views of the fused ones, so loading a state dict into the layers still
        updates the fused layer; a later `Module.to` (new tensors) quietly turns it off.
        """
        self._fused = None
        if not enabled:
            return
        layers = self._projections()
        weight = torch.cat([layer.weight.detach() for layer in layers])
        reference = self.q_layer.bias if self.q_layer.bias is not None else self.q_layer.weight
        bias = torch.cat(
            [
                layer.bias.detach()
                if layer.bias is not None
                else layer.weight.new_zeros(layer.out_features, dtype=reference.dtype)
                for layer in layers
            ]
        )
        fused = Linear(weight.shape[1], weight.shape[0], device="meta")
        fused.weight = nn.Parameter(weight, requires_grad=False)
        fused.bias = nn.Parameter(bias, requires_grad=False)
        start = 0
        for layer in layers:
            stop = start + layer.out_features
            layer.weight = nn.Parameter(weight[start:stop], requires_grad=False)
            if layer.bias is not None:
                layer.bias = nn.Parameter(bias[start:stop], requires_grad=False)
            start = stop
        self._fused = (fused, self._storage())

    def _storage(self) -> tuple[int, ...]:
        return tuple(
            part.data_ptr()
            for layer in self._projections()
            for part in (layer.weight, layer.bias)
            if part is not None
        )

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v and r of ``x``: in one product when fused (and still in force), else four."""
        if self._fused is not None:
            fused, storage = self._fused
            if self._storage() == storage:  # no layer got a tensor of its own since
                fused.small_batch_rows = self.q_layer.small_batch_rows
                sizes = [layer.out_features for layer in self._projections()]
                return fused(x).split(sizes, dim=-1)
        return tuple(layer(x) for layer in self._projections())

    def forward(
        self,
        x: torch.Tensor,
        visible: torch.Tensor,
        geometry: TimeGeometry,
        memory: AttentionMemory,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TapePosition]:
        """Attends from ``x`` ``(B, T, H)`` over the remembered frames and ``x``.

        Args:
            x: Inputs of the current frames.
            visible: ``(B, T, M + T)`` bool: which keys each query may attend to.
            geometry: Time distances of queries and keys.
            memory: The remembered keys and values (``(B, heads, M, d)``); its mask is not read.

        Returns:
            ``x + attention(x)``, the keys and values of the last ``M`` frames and where they
            end on their tape.
        """
        batch, steps, width = x.shape
        q, k, v, r = self._project(x)
        keys, values, tape = _extend(memory, self._split(k), self._split(v))
        queries = self._split(q)
        # Scaled before the product so float16 cannot overflow in it.
        logits = (queries / queries.shape[-1]) @ keys.transpose(-1, -2)
        distance = geometry.distance.clamp(0, self.memory - 1)
        basis = self.b_nd[:, distance] * geometry.band  # (bases, T, M + T)
        weights = self._split(r)  # (B, heads, T, bases)
        logits = logits + torch.einsum("bhjn,njk->bhjk", weights, basis.to(weights.dtype))
        logits = logits.masked_fill(~visible[:, None], float("-inf"))
        attended = torch.softmax(logits, dim=-1) @ values
        out = x + self.proj_layer(attended.transpose(1, 2).reshape(batch, steps, width))
        return out, keys[:, :, -self.memory :], values[:, :, -self.memory :], tape


class MaskedAttention(nn.Module):
    """Wraps `RelativeAttention` (as ``orc_block``) with the clipped causal mask."""

    def __init__(self, hidsize: int, heads: int, memory: int) -> None:
        super().__init__()
        self.memory = memory
        self.orc_block = RelativeAttention(hidsize, heads, memory)

    def forward(
        self,
        x: torch.Tensor,
        first: torch.Tensor,
        geometry: TimeGeometry,
        state: AttentionMemory,
    ) -> tuple[torch.Tensor, AttentionMemory]:
        """Attends with each frame seeing itself and the previous ``memory - 1`` frames.

        ``first[:, 0]`` True starts a new episode: the remembered frames become invisible.
        """
        remembered = state.valid & ~first[:, :1]  # (B, M)
        columns = torch.cat([remembered, remembered.new_ones(x.shape[0], x.shape[1])], dim=1)
        visible = geometry.band[None] & columns[:, None, :]
        out, keys, values, tape = self.orc_block(x, visible, geometry, state)
        return out, AttentionMemory(columns[:, -self.memory :], keys, values, tape)


class TransformerBlock(nn.Module):
    """``a = LN(x) + attention(LN(x))``, then ``a + mlp(a)``.

    The attention's residual wraps the normalised input, as in the official network.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        hid = config.hidsize
        self.pre_r_ln = nn.LayerNorm(hid)
        self.r = MaskedAttention(hid, config.attention_heads, config.memory)
        self.mlp0 = _dense(hid, hid * config.pointwise_ratio)
        self.mlp1 = NormedLayer(Linear(hid * config.pointwise_ratio, hid), None, relu=False)

    def forward(
        self,
        x: torch.Tensor,
        first: torch.Tensor,
        geometry: TimeGeometry,
        state: AttentionMemory,
    ) -> tuple[torch.Tensor, AttentionMemory]:
        """Applies the block."""
        attended, state = self.r(self.pre_r_ln(x), first, geometry, state)
        return attended + self.mlp1(self.mlp0(attended)), state


class RecurrentStack(nn.Module):
    """The transformer blocks, each with its own memory."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.memory = config.memory
        self.blocks = nn.ModuleList([TransformerBlock(config) for _ in range(config.n_blocks)])

    def forward(
        self, x: torch.Tensor, first: torch.Tensor, state: Sequence[AttentionMemory]
    ) -> tuple[torch.Tensor, list[AttentionMemory]]:
        """Applies every block."""
        geometry = TimeGeometry.build(x.shape[1], self.memory, x.device)
        new_state = []
        for block, memory in zip(self.blocks, state, strict=True):
            x, memory = block(x, first, geometry, memory)
            new_state.append(memory)
        return x, new_state


class PolicyNet(nn.Module):
    """Everything before the heads (``net.*``): image encoder, goal, transformer, output."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.img_process = ImageEncoder(config)
        self.mineclip_embed_linear = Linear(GOAL_DIM, config.hidsize)
        self.recurrent_layer = RecurrentStack(config)
        self.lastlayer = _dense(config.hidsize, config.hidsize)
        self.final_ln = nn.LayerNorm(config.hidsize)


class CategoricalHead(nn.Module):
    """``log_softmax(linear(x) / temperature)``."""

    def __init__(self, hidsize: int, n: int) -> None:
        super().__init__()
        self.linear_layer = Linear(hidsize, n)

    def forward(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """Returns float32 log-probabilities."""
        return torch.log_softmax(self.linear_layer(x).float() / temperature, dim=-1)


class ValueNormalizer(nn.Module):
    """EWMA statistics of the returns the value head was trained on (read-only here).

    They stay float32 whatever the network is cast to (see `Steve1Network.cast`).
    """

    def __init__(self) -> None:
        super().__init__()
        # Frozen parameters, not buffers, as in the official network (its parameter count
        # includes them).
        self.running_mean = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.running_mean_sq = nn.Parameter(torch.ones(1), requires_grad=False)
        self.debiasing_term = nn.Parameter(torch.tensor(1.0), requires_grad=False)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Maps normalised values back to returns."""
        debias = self.debiasing_term.float().clamp(min=1e-5)
        mean = self.running_mean.float() / debias
        variance = (self.running_mean_sq.float() / debias - mean**2).clamp(min=1e-2)
        return x.float() * variance.sqrt() + mean


class ValueHead(nn.Module):
    """A linear value estimate, denormalised."""

    def __init__(self, hidsize: int) -> None:
        super().__init__()
        self.linear = Linear(hidsize, 1)
        self.normalizer = ValueNormalizer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns float32 values of shape ``x.shape[:-1]``."""
        return self.normalizer.denormalize(self.linear(x))[..., 0]


class HeadOutput(NamedTuple):
    """Per-head log-probabilities ``(..., 8641)``, ``(..., 121)`` and the value ``(...)``."""

    buttons: torch.Tensor
    camera: torch.Tensor
    value: torch.Tensor


class PolicyOutput(NamedTuple):
    """What one time step of `Steve1Network.forward` gives, per env.

    Attributes:
        buttons: ``(N, 8641)`` log-probabilities actions are sampled from: guided
            ``(1 + s) * conditional - s * unconditional`` with a ``cond_scale`` s (not
            renormalised, as upstream), else the conditional ones.
        camera: ``(N, 121)``, likewise.
        conditional: Heads of the goal-conditioned branch (values included).
        unconditional: Heads of the zero-goal branch, or None without guidance.
    """

    buttons: torch.Tensor
    camera: torch.Tensor
    conditional: HeadOutput
    unconditional: HeadOutput | None


def guidance_rows(cond_scale: float | None) -> int:
    """Batch rows per env: two guidance branches (conditional, unconditional), or one."""
    return 1 if cond_scale is None else 2


def stack_memories(memories: Sequence[Sequence[AttentionMemory]]) -> list[AttentionMemory]:
    """Joins per-env memories (per block, each env's rows) into one batch memory, env by env."""
    if len(memories) == 1:
        return list(memories[0])
    return [
        AttentionMemory(
            torch.cat([block.valid for block in blocks]),
            torch.cat([block.keys for block in blocks]),
            torch.cat([block.values for block in blocks]),
        )
        for blocks in zip(*memories, strict=True)
    ]


def env_memory(memory: Sequence[AttentionMemory], env: int, rows: int) -> list[AttentionMemory]:
    """Env `env`'s `rows` rows of a batch memory, per block (views, not copies)."""
    start, stop = env * rows, (env + 1) * rows
    if start == 0 and stop == memory[0].keys.shape[0]:
        return list(memory)  # the whole batch: it keeps its tape
    return [
        AttentionMemory(block.valid[start:stop], block.keys[start:stop], block.values[start:stop])
        for block in memory
    ]


class Steve1Network(nn.Module):
    """The whole STEVE-1 policy network; its state dict is the official one.

    Built plain, it runs stock PyTorch kernels; the two CPU kernel paths of this module (see
    its docstring) are opt-in, at construction or later with `use_cpu_kernels`.

    Args:
        config: The architecture (`RELEASED_CONFIG` for the official weights).
        small_batch_matmul: Compute CPU batches of up to `Linear.SMALL_BATCH_ROWS` rows as
            ``W @ x.T`` (faster at inference batch sizes; see `Linear` for float32).
        batch_invariant_norm: Run the image encoder's GroupNorms so that a frame's features do
            not depend on the batch it is encoded in (single-threaded where PyTorch would split).
    """

    def __init__(
        self,
        config: NetworkConfig = RELEASED_CONFIG,
        *,
        small_batch_matmul: bool = False,
        batch_invariant_norm: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.net = PolicyNet(config)
        self.pi_head = nn.ModuleDict(
            {
                "buttons": CategoricalHead(config.hidsize, N_BUTTON_ACTIONS),
                "camera": CategoricalHead(config.hidsize, N_CAMERA_ACTIONS),
            }
        )
        self.value_head = ValueHead(config.hidsize)
        self.use_cpu_kernels(
            small_batch_matmul=small_batch_matmul, batch_invariant_norm=batch_invariant_norm
        )

    def use_cpu_kernels(self, *, small_batch_matmul: bool, batch_invariant_norm: bool) -> None:
        """Turns the CPU kernel paths on or off (they change nothing on other devices)."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.small_batch_rows = Linear.SMALL_BATCH_ROWS if small_batch_matmul else 0
            elif isinstance(module, SampleGroupNorm):
                module.batch_invariant = batch_invariant_norm

    def cast(
        self,
        device: torch.device,
        precision: Precision | str | torch.dtype,
        *,
        channels_last: bool = False,
        fuse_projections: bool = False,
    ) -> Steve1Network:
        """Moves the network and casts it to a `Precision` (or one dtype for all of it).

        The value statistics stay float32 whatever the precision.

        Args:
            device: Where the network runs.
            precision: A `Precision` from `PRECISIONS` or its name, or a torch dtype for the
                whole network.
            channels_last: Keep the convolution weights in the ``channels_last`` memory
                format (the layout oneDNN's CPU convolutions run fastest in); the same
                arithmetic, so it changes results only by summation order.
            fuse_projections: Compute each attention layer's q, k, v and r in one product
                (`RelativeAttention.fuse_projections`); the same dot products, in another
                order.

        Raises:
            ConfigurationError: If `precision` is none of these.
        """
        if isinstance(precision, torch.dtype):
            precision = _uniform(str(precision).removeprefix("torch."), precision)
        elif isinstance(precision, str) and precision in PRECISIONS:
            precision = PRECISIONS[precision]
        elif not isinstance(precision, Precision):
            raise ConfigurationError(
                f"precision must be a Precision, one of {', '.join(map(repr, PRECISIONS))} or "
                f"a torch dtype, got {precision!r}."
            )
        self.to(device=device, dtype=precision.activations)
        for module in self.modules():
            if isinstance(module, Linear) and module.weight.dtype != precision.matmuls:
                # Only the weight: a mixed layer adds its bias in the activations' dtype.
                module.weight = nn.Parameter(
                    module.weight.detach().to(precision.matmuls), requires_grad=False
                )
        cnn = self.net.img_process.cnn
        cnn.to(dtype=precision.encoder)
        cnn.channels_last = channels_last
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for module in cnn.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=layout)
        for module in self.modules():
            if isinstance(module, RelativeAttention):
                module.fuse_projections(fuse_projections)
        self.value_head.normalizer.float()
        return self

    def initial_state(self, batch: int) -> list[AttentionMemory]:
        """Returns an empty memory (nothing visible) for `batch` sequences."""
        parameter = self.net.final_ln.weight  # the activations' dtype and device
        config = self.config
        heads = config.attention_heads
        shape = (batch, heads, config.memory, config.hidsize // heads)
        return [
            AttentionMemory(
                valid=torch.zeros(batch, config.memory, dtype=torch.bool, device=parameter.device),
                keys=parameter.new_zeros(shape),
                values=parameter.new_zeros(shape),
            )
            for _ in range(config.n_blocks)
        ]

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, S, S, 3)`` uint8 frames -> ``(N, H)`` image features."""
        return self.net.img_process(frames)

    def trunk(
        self,
        features: torch.Tensor,
        goals: torch.Tensor,
        first: torch.Tensor,
        state: Sequence[AttentionMemory],
    ) -> tuple[torch.Tensor, list[AttentionMemory]]:
        """Runs goal conditioning, the transformer and the output layers.

        Args:
            features: ``(B, T, H)`` image features.
            goals: ``(B, T, 512)`` goal embeddings (zeros for the unconditional branch).
            first: ``(B, T)`` bool; ``first[:, 0]`` True forgets the memory (a new episode).
                Like the official network, it reads no later flag: split a chunk where an
                episode starts.
            state: The memory per block, batch ``B``.

        Returns:
            ``(B, T, H)`` latents and the new memory.

        Raises:
            ConfigurationError: If ``first`` is True after a chunk's first step.
        """
        if first.shape[1] > 1 and bool(first[:, 1:].any()):
            raise ConfigurationError(
                "first may be True only at a chunk's first step (an episode start inside a "
                "chunk would not reset the memory); split the chunk where the episode starts."
            )
        net = self.net
        x = features + net.mineclip_embed_linear(goals.to(features.dtype))
        x, new_state = net.recurrent_layer(x, first, state)
        return net.final_ln(net.lastlayer(F.relu(x))), new_state

    def heads(self, latent: torch.Tensor) -> HeadOutput:
        """Action log-probabilities (at the configured temperature) and the value."""
        temperature = self.config.temperature
        return HeadOutput(
            self.pi_head["buttons"](latent, temperature),
            self.pi_head["camera"](latent, temperature),
            self.value_head(latent),
        )

    def forward(
        self,
        frames: torch.Tensor,
        goals: torch.Tensor,
        first: torch.Tensor,
        state: Sequence[AttentionMemory],
        *,
        cond_scale: float | None = None,
        share_frame_encoding: bool = True,
    ) -> tuple[PolicyOutput, list[AttentionMemory]]:
        """Runs one time step for N envs, with classifier-free guidance when `cond_scale` is set.

        Guidance is a property of the call, not of the weights: with a `cond_scale` each env
        has two batch rows (`guidance_rows`), the conditional one with its goal and the
        unconditional one with a zero goal, and `state` must hold both.

        Args:
            frames: ``(N, S, S, 3)`` uint8 agent frames (already resized, see
                `steve1_env.agent.conversion.agent_frame`).
            goals: ``(N, 512)`` goal embeddings (cast to the weights' dtype).
            first: ``(N,)`` bool: True starts a new episode for that env (its memory is
                forgotten).
            state: The memory per block, ``N * guidance_rows(cond_scale)`` rows, interleaved
                per env (see `stack_memories`).
            cond_scale: The guidance scale s, or None for the conditional branch alone.
            share_frame_encoding: Encode each frame once for both branches. False encodes it
                per branch, as upstream does (for comparisons only).

        Returns:
            The per-env outputs and the new memory (same layout as `state`).

        Raises:
            ConfigurationError: If `state` has another number of rows.
        """
        n, rows = frames.shape[0], guidance_rows(cond_scale)
        if state[0].keys.shape[0] != n * rows:
            raise ConfigurationError(
                f"The memory has {state[0].keys.shape[0]} batch rows, but {n} env(s) with "
                f"cond_scale={cond_scale} need {n * rows}; stack one memory per env from "
                f"initial_state({rows})."
            )
        # Rows are interleaved per env (cond, uncond, cond, ...), so each env's memory stays
        # one contiguous slice.
        if share_frame_encoding:
            features = self.encode_frames(frames).repeat_interleave(rows, dim=0)
        else:
            features = self.encode_frames(frames.repeat_interleave(rows, dim=0))
        if rows == 2:
            goals = torch.stack([goals, torch.zeros_like(goals)], dim=1).flatten(0, 1)
        first = first.repeat_interleave(rows)

        latent, state = self.trunk(features[:, None], goals[:, None], first[:, None], state)
        heads = self.heads(latent[:, 0])

        conditional = HeadOutput(*(head[0::rows] for head in heads))
        if cond_scale is None:
            return PolicyOutput(conditional.buttons, conditional.camera, conditional, None), state
        unconditional = HeadOutput(*(head[1::2] for head in heads))
        s = cond_scale
        guided = PolicyOutput(
            (1 + s) * conditional.buttons - s * unconditional.buttons,
            (1 + s) * conditional.camera - s * unconditional.camera,
            conditional,
            unconditional,
        )
        return guided, state
