"""The single place that decides dtypes and devices and keeps autocast away from the policy.

Upstream STEVE-1 computes the prompt embedding inside an autocast region, so on a GPU it comes
out float16 while the policy weights are float32, and the policy's first linear layer fails
with ``mat1 and mat2 must have the same dtype``. Two guarantees remove that failure here:

1. Goal embeddings leave the prompt layer as finite float32 ``(512,)`` arrays
   (`as_goal_embedding`), whatever dtype, device or batch shape the encoder produced.
2. Policies run inside `autocast_disabled`, which turns autocast off for every device type a
   caller may have enabled it on. Autocast state is thread-local and nests, so an outer region
   opened by the caller would otherwise leak into the policy.

Every torch component checks its ``device`` argument with `resolve_device`.

`torch` is imported lazily: if it has never been imported, no autocast region can be open.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from steve1_env.errors import ConfigurationError, GoalEmbeddingError

if TYPE_CHECKING:
    import torch

GOAL_DIM = 512
"""Width of STEVE-1's goal (MineCLIP visual) embedding."""

POLICY_PRECISIONS = ("float32", "bfloat16-mixed", "bfloat16", "float16")
"""The native policy's ``dtype=`` names (`steve1_env.agent.network.PRECISIONS`), torch-free."""


def as_goal_embedding(value: Any, *, dim: int = GOAL_DIM) -> np.ndarray:
    """Converts an encoder output to a finite float32 goal embedding of shape ``(dim,)``.

    Args:
        value: A numpy array, a torch tensor (any dtype or device, autograd allowed) or a
            sequence of numbers, of shape ``(dim,)`` or ``(1, dim)``.
        dim: Expected embedding width.

    Returns:
        A new, C-contiguous float32 array of shape ``(dim,)``.

    Raises:
        GoalEmbeddingError: If the shape is not ``(dim,)``/``(1, dim)`` or a value is NaN/inf.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        # Upcast on the tensor's own device first: numpy has no bfloat16.
        value = value.detach().float().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise GoalEmbeddingError(
            f"A goal embedding must be real numeric, got dtype {array.dtype}. Return a float array "
            f"or tensor of shape ({dim},) from the prompt encoder."
        )
    if array.shape == (1, dim):
        array = array[0]
    if array.shape != (dim,):
        raise GoalEmbeddingError(
            f"A goal embedding must have shape ({dim},) or (1, {dim}), got {array.shape}."
        )
    embedding = np.array(array, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(embedding).all():
        bad = int((~np.isfinite(embedding)).sum())
        raise GoalEmbeddingError(
            f"A goal embedding holds {bad} non-finite value(s) (NaN or inf) after conversion to "
            "float32. float16 overflows above 65504: compute the embedding in float32 "
            "(outside autocast) or check the encoder weights."
        )
    return embedding


def is_goal_embedding(value: Any, *, dim: int = GOAL_DIM) -> bool:
    """Returns True if `value` already is what `as_goal_embedding` returns.

    That is a C-contiguous float32 numpy array of shape ``(dim,)`` with finite values; such a
    value needs no conversion (a cheap check: no copy is made).
    """
    return (
        isinstance(value, np.ndarray)
        and value.dtype == np.float32
        and value.shape == (dim,)
        and value.flags.c_contiguous
        and bool(np.isfinite(value).all())
    )


def goal_tensor(embedding: np.ndarray, device: Any, dtype: Any = None) -> Any:
    """Returns a goal embedding as a torch tensor of shape ``(1, dim)`` for a policy.

    Args:
        embedding: Output of `as_goal_embedding`.
        device: The policy's torch device.
        dtype: The policy's parameter dtype; float32 unless the policy was cast on purpose.
    """
    import torch

    tensor = torch.from_numpy(as_goal_embedding(embedding, dim=embedding.shape[-1]))
    return tensor.to(device=device, dtype=dtype or torch.float32).unsqueeze(0)


def resolve_device(device: Any) -> torch.device:
    """Returns `device` as a `torch.device` this machine has; every torch component uses it.

    Checked here once, so an unusable device is a clear error when a component is built,
    instead of torch's ``AssertionError: Torch not compiled with CUDA enabled`` (or ``invalid
    device ordinal``) on its first computation.

    Raises:
        ConfigurationError: If `device` is not a device name, is ``meta``, or names CUDA (or
            a CUDA index) or another accelerator this machine or torch build lacks.
    """
    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigurationError(
            f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"device={device!r} but CUDA is not available (torch {torch.__version__}); use "
                "device='cpu' or install a CUDA build of torch."
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigurationError(
                f"device={device!r} but this machine has {count} CUDA device(s) (cuda:0 to "
                f"cuda:{count - 1}); pick one of those."
            )
    elif resolved.type == "meta":
        raise ConfigurationError(
            f"device={device!r} holds shapes but no data, so no network can run there; use "
            "device='cpu' or a GPU."
        )
    elif resolved.type != "cpu":
        try:  # mps, xpu, xla, ...: whether this build and machine have one, torch only says so
            torch.empty(0, device=resolved)
        except Exception as exc:  # torch raises RuntimeError, AssertionError, ImportError...
            reason = str(exc).strip().split(". ")[0][:160] or type(exc).__name__
            raise ConfigurationError(
                f"device={device!r} is not usable here ({reason}); use device='cpu', or a "
                "device this torch build and machine have."
            ) from None
    return resolved


def _device_types(device: Any) -> list[str]:
    import torch

    types = {"cpu", torch.device(device).type if device is not None else "cpu"}
    if torch.cuda.is_available():
        types.add("cuda")
    return sorted(types)


@contextlib.contextmanager
def autocast_disabled(device: Any = "cpu") -> Iterator[None]:
    """Disables autocast for the policy's device type and for CPU, whatever the caller opened.

    Args:
        device: The device the policy runs on (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
            `torch.device`); CUDA is disabled too whenever it is available, since a caller may
            hold a CUDA region while the policy runs on the CPU.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        for device_type in _device_types(device):
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


@contextlib.contextmanager
def no_tf32(device: Any, enabled: bool = True) -> Iterator[None]:
    """Keeps float32 matmuls and convolutions in full float32 on CUDA.

    cuDNN convolutions default to TF32 (10-bit mantissa) on Ampere and newer GPUs, which would
    make a "float32" policy drift from the official outputs. Does nothing on other devices or
    when not `enabled`.
    """
    torch = sys.modules.get("torch")
    if not enabled or torch is None or torch.device(device).type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with cudnn.flags(
            enabled=cudnn.enabled,
            benchmark=cudnn.benchmark,
            deterministic=cudnn.deterministic,
            allow_tf32=False,
        ):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


@contextlib.contextmanager
def exact_inference(device: Any) -> Iterator[None]:
    """Inference mode with autocast off and (on CUDA) no TF32: float32 stays float32.

    What the MineCLIP towers and the prior run in, so their float32 outputs match the official
    ones.
    """
    import torch

    with torch.inference_mode(), autocast_disabled(device), no_tf32(device):
        yield


def autocast_active() -> bool:
    """Returns True if any autocast region is active in this thread (for checks and tests)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    device_types = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return any(torch.is_autocast_enabled(device_type) for device_type in device_types)
