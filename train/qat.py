"""Quantization-aware fine-tuning: train through the rounding the INT8 export will apply.

`export/quantize.py` quantizes SSRAN's body: per-channel symmetric int8 weights on the block convs, and
per-tensor uint8 activations on every tensor the QDQ graph carries (block inputs, each ReLU'd conv,
the concat, the attention's pool, conv, gate and product, the block output), with ranges from a
min/max calibration on tiles of the training data. `ExportQuantSim` puts the same rounding into the
torch model (fake quantization, straight-through gradients) so fine-tuning can adapt the weights to
it; it recalibrates its ranges the way the export does, on the export's own calibration tiles, so the
graph the export writes carries the ranges the weights were trained with.

The input layer (its 1x1 conv), the attention's 1-D conv and the reconstruction head keep float
weights, as in the export (`quantize.edge_nodes`, `quantize.eca_conv_nodes`); biases stay float (the
export's int32 bias grid is the input's step times the weight's, far below the activations' step).
The points below mirror the export's QDQ placement by hand: tests/test_qat.py holds the two
together (the simulation must match ONNX Runtime's INT8 graph).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from ssran_edge.model import SSRAN, SpatialSpectralBlock

UINT8 = (0, 255)
INT8_SYMMETRIC = 127  # ONNX Runtime's symmetric int8 weights use [-127, 127]


def _round_per_channel(weight: torch.Tensor) -> torch.Tensor:
    """Each output channel on 255 symmetric levels of its own max |w| (straight-through gradient)."""
    absmax = weight.detach().abs().amax(dim=tuple(range(1, weight.dim()))).clamp_min(1e-12)
    scale = (absmax / INT8_SYMMETRIC).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -INT8_SYMMETRIC, INT8_SYMMETRIC)


def _body(model: nn.Module) -> SSRAN:
    body = getattr(model, "ssran", model)  # the skip variants wrap an SSRAN; their skip stays float
    if not isinstance(body, SSRAN):
        raise TypeError(f"quantization-aware training needs an SSRAN model, not {type(model).__name__}")
    return body


class ExportQuantSim:
    """Fake INT8 quantization of an SSRAN model where the export quantizes it. Off until `enable()`;
    `calibrate()` must run first (and again whenever the weights have moved)."""

    def __init__(self, model: nn.Module):
        body = _body(model)
        self.model = model
        self.ranges: dict[str, tuple[float, float]] = {}
        self.enabled = False
        self._observing: dict[str, list[float]] | None = None
        self._handles = []
        # Activation points: (name, module, reads the module's input instead of its output).
        points: list[tuple[str, nn.Module, bool]] = [("features", body.features, False)]
        self.weight_convs: list[nn.Conv2d] = []
        for k, block in enumerate(body.blocks):
            assert isinstance(block, SpatialSpectralBlock)
            points += [(f"blocks.{k}.spatial.1", block.spatial[1], False),
                       (f"blocks.{k}.spatial.3", block.spatial[3], False),
                       (f"blocks.{k}.spectral.1", block.spectral[1], False),
                       (f"blocks.{k}.spectral.3", block.spectral[3], False),
                       (f"blocks.{k}.concat", block.fuse[0], True),
                       (f"blocks.{k}.fuse", block.fuse, False),
                       (f"blocks.{k}.attention.pool", block.attention.conv, True),
                       (f"blocks.{k}.attention.conv", block.attention.conv, False),
                       (f"blocks.{k}.attention.gate", block.attention.gate, False),
                       (f"blocks.{k}.attention", block.attention, False),
                       (f"blocks.{k}", block, False)]
            self.weight_convs += [block.spatial[0], block.spatial[2], block.spectral[0], block.spectral[2],
                                  block.fuse[0]]
        for name, module, reads_input in points:
            if reads_input:
                self._handles.append(module.register_forward_pre_hook(
                    lambda m, args, name=name: (self._point(name, args[0]), *args[1:])))
            else:
                self._handles.append(module.register_forward_hook(
                    lambda m, args, out, name=name: self._point(name, out)))

    def _point(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self._observing is not None:
            lo, hi = float(x.detach().min()), float(x.detach().max())
            seen = self._observing.setdefault(name, [lo, hi])
            seen[0], seen[1] = min(seen[0], lo), max(seen[1], hi)
            return x
        if not self.enabled:
            return x
        scale, zero = self.qparams(name)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, *UINT8)

    def qparams(self, name: str) -> tuple[float, int]:
        """uint8 scale and zero point from a calibrated range, as ONNX Runtime computes them (the range
        always holds 0)."""
        lo, hi = self.ranges[name]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / (UINT8[1] - UINT8[0]) or 1.0
        return scale, int(round(UINT8[0] - lo / scale))

    @torch.no_grad()
    def calibrate(self, tiles: Iterable[np.ndarray]) -> None:
        """Min/max of every point over `tiles` (NCHW arrays, run one by one like the export's
        calibration reader) through the float model, as ONNX Runtime calibrates the float graph."""
        was_training, was_enabled = self.model.training, self.enabled
        self.disable()
        self.model.eval()
        self._observing = {}
        try:
            device = next(self.model.parameters()).device
            for tile in tiles:
                self.model(torch.from_numpy(tile).to(device))
            self.ranges = {name: (lo, hi) for name, (lo, hi) in self._observing.items()}
        finally:
            self._observing = None
            self.model.train(was_training)
            if was_enabled:
                self.enable()

    def _round_weights(self, on: bool) -> None:
        # An instance-level forward, not a parametrization: the parameters, their order (which the
        # optimizer and the weight average rely on) and the state dict stay those of the float model.
        for conv in self.weight_convs:
            if on:
                conv.forward = lambda x, conv=conv: conv._conv_forward(x, _round_per_channel(conv.weight), conv.bias)
            else:
                conv.__dict__.pop("forward", None)

    def enable(self) -> None:
        if not self.ranges:
            raise RuntimeError("ExportQuantSim.enable() before calibrate()")
        self._round_weights(True)
        self.enabled = True

    def disable(self) -> None:
        self._round_weights(False)
        self.enabled = False

    def remove(self) -> None:
        """Back to the plain float model (weights as trained, no hooks)."""
        self.disable()
        for handle in self._handles:
            handle.remove()
        self._handles = []
