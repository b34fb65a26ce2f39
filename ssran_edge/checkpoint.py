"""Weights on disk: safetensors + a JSON sidecar (the model card), written atomically.

`model.safetensors` holds only tensors (no pickle), with `format: ssran-edge` in its header;
`model.json` beside it records architecture, bands, wavelengths, SRF, protocol, test metrics and
version. Training checkpoints (for --resume) are torch files loaded with weights_only=True.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from ssran_edge.atomic import atomic_path
from ssran_edge.card import FORMAT, ModelCard
from ssran_edge.errors import CheckpointError, one_line
from ssran_edge.model import build_model


def save_model(model: torch.nn.Module, path: str | Path, card: ModelCard) -> Path:
    """Write weights (safetensors) and the JSON card beside them."""
    from safetensors.torch import save_file

    card.check(str(path))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    card.write(path)
    return path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from .safetensors, or a .pt/.pth state dict loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("format") != FORMAT:
                    raise CheckpointError(f"{path}: safetensors file not written by ssran-edge")
                return {k: f.get_tensor(k) for k in f.keys()}
        state = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as exc:  # truncated zip, pickle payload refused by weights_only, bad header...
        raise CheckpointError(f"{path}: cannot load checkpoint safely ({_load_failure(exc)})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """(model in eval mode, card) from weights + sidecar; refuses anything that is not ours."""
    card = ModelCard.read(path)
    state = load_state_dict(path)
    try:
        model = build_model(card.arch, card.in_bands, card.out_bands, width=card.width,
                            num_blocks=card.num_blocks, eca_kernel=card.eca_kernel)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match the model card ({first[:200]})") from None
    return model.to(map_location).eval(), card


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training checkpoint to resume from")
    try:
        return _torch_load(path)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot resume from this checkpoint ({_load_failure(exc)})") from None


def _torch_load(path: Path) -> Any:
    with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome is reported in one line
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_failure(exc: BaseException) -> str:
    """One line on why torch.load / safetensors refused a file; a pickle payload is named as such."""
    if isinstance(exc, pickle.UnpicklingError):  # weights_only met something other than tensors
        return "pickle payload refused by weights_only: Python objects besides tensors"
    reason = one_line(exc) or type(exc).__name__
    return reason[:200]
