"""SSRAN: Spatial-Spectral Residual Attention Network (Zheng, Chen, Lu, IEEE TGRS 60, 2022).

Reads like the paper's figure and the authors' TensorFlow code (SSRAN.py, local_band_attention.py):
feature extraction -> spatial-spectral residual blocks -> reconstruction -> neighbouring spectral
attention. Tensors are NCHW: (batch, bands, height, width).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ssran_edge.baseline import EPS, root_polynomial_exponents
from ssran_edge.card import ARCHITECTURE_NAMES


class ECA(nn.Module):
    """Efficient channel attention: global average pool -> 1-D conv across channels -> sigmoid -> scale.

    The 1-D conv has one filter, zero "same" padding and no bias, as `tf.layers.conv1d(...,
    padding='same', use_bias=False)` in the original. The pool covers whatever H x W it is given,
    so the output depends on the extent of the input (a 4x4 patch vs a whole tile).
    """

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ECA kernel size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.gate = nn.Sigmoid()  # a module, so quantization-aware training can hook its output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # (N, C)
        weights = self.gate(self.conv(pooled.unsqueeze(1))).squeeze(1)  # (N, C)
        return x * weights[:, :, None, None]


class SpatialSpectralBlock(nn.Module):
    """Two 3x3 convs (spatial) beside two 1x1 convs (spectral), fused by a 1x1 conv, ECA, residual."""

    def __init__(self, width: int = 64, eca_kernel: int = 5):
        super().__init__()
        self.spatial = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.spectral = nn.Sequential(
            nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, width, 1), nn.ReLU(inplace=True))
        self.attention = ECA(eca_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.fuse(torch.cat([self.spatial(x), self.spectral(x)], dim=1))
        return torch.relu(self.attention(features) + x)


class SSRAN(nn.Module):
    """MSI (N, in_bands, H, W) -> HSI (N, out_bands, H, W).

    Defaults are the paper's: width 64, 3 blocks, ECA kernel 5. For 4 -> 103 bands: 278,331 parameters.
    """

    def __init__(self, in_bands: int, out_bands: int, width: int = 64, num_blocks: int = 3,
                 eca_kernel: int = 5):
        super().__init__()
        if in_bands < 1 or out_bands < 1:
            raise ValueError(f"band counts must be positive, got {in_bands} -> {out_bands}")
        self.in_bands, self.out_bands = in_bands, out_bands
        self.features = nn.Sequential(nn.Conv2d(in_bands, width, 1), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[SpatialSpectralBlock(width, eca_kernel) for _ in range(num_blocks)])
        self.reconstruct = nn.Conv2d(width, out_bands, 1)
        self.band_attention = ECA(eca_kernel)  # the neighbouring spectral attention on the output
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform weights as slim.conv2d's default initializer; zero biases as slim's.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv1d)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, msi: torch.Tensor) -> torch.Tensor:
        return self.band_attention(self.reconstruct(self.blocks(self.features(msi))))


class LinearSkipSSRAN(nn.Module):
    """Variant (not in the paper): SSRAN plus a per-pixel linear MSI -> HSI map.

    The linear map is initialised from the least-squares fit on the training pixels and the SSRAN
    reconstruction starts at zero, so training begins at the linear baseline and SSRAN learns the
    residual. Subclasses change what the map reads (`skip_inputs` channels from `skip_features`).
    """

    def __init__(self, in_bands: int, out_bands: int, width: int = 64, num_blocks: int = 3,
                 eca_kernel: int = 5, skip_inputs: int | None = None):
        super().__init__()
        self.in_bands, self.out_bands = in_bands, out_bands
        self.ssran = SSRAN(in_bands, out_bands, width, num_blocks, eca_kernel)
        self.linear = nn.Conv2d(skip_inputs or in_bands, out_bands, 1)
        nn.init.zeros_(self.ssran.reconstruct.weight)

    def init_linear(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the skip from a least-squares fit: weight (out_bands, skip inputs), bias (out_bands,)."""
        with torch.no_grad():
            self.linear.weight.copy_(weight.reshape(self.linear.weight.shape))
            self.linear.bias.copy_(bias)

    def skip_features(self, msi: torch.Tensor) -> torch.Tensor:
        return msi

    def skip(self, msi: torch.Tensor) -> torch.Tensor:
        return self.linear(self.skip_features(msi))

    def forward(self, msi: torch.Tensor) -> torch.Tensor:
        return self.ssran(msi) + self.skip(msi)


class RootPolySkipSSRAN(LinearSkipSSRAN):
    """Variant (not in the paper): SSRAN plus a per-pixel root-polynomial MSI -> HSI map of order 3.

    The skip is the `rootpoly3` baseline (`ssran_edge.baseline`) as layers: the root-polynomial terms
    exp(A . log(max(msi, eps))) with fixed exponents A (a 1x1 conv on the log), then the 1x1 conv of
    LinearSkipSSRAN over those terms, initialised from the least-squares fit; SSRAN's reconstruction
    starts at zero. So training starts at the strongest simple method, and SSRAN learns what it gets
    wrong. Log, Conv and Exp export to every ONNX runtime.
    """

    def __init__(self, in_bands: int, out_bands: int, width: int = 64, num_blocks: int = 3,
                 eca_kernel: int = 5, order: int = 3):
        exponents = torch.from_numpy(root_polynomial_exponents(in_bands, order)).float()
        super().__init__(in_bands, out_bands, width, num_blocks, eca_kernel, skip_inputs=len(exponents))
        self.register_buffer("exponents", exponents[:, :, None, None])  # (terms, in_bands, 1, 1), fixed

    def skip_features(self, msi: torch.Tensor) -> torch.Tensor:
        return torch.exp(nn.functional.conv2d(torch.log(msi.clamp_min(EPS)), self.exponents))


# JFIF (JPEG) R'G'B' -> Y, Cb, Cr (without the 0.5 offset of the chroma): the space 4:2:0 subsamples in.
RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114],
                           [-0.168736, -0.331264, 0.5],
                           [0.5, -0.418688, -0.081312]])


def srgb_encode(linear: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 inverse EOTF (the 2.4 power with a linear toe), on values clamped to >= 0."""
    x = linear.clamp_min(0.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def srgb_decode(encoded: torch.Tensor) -> torch.Tensor:
    """The sRGB EOTF: encoded -> linear (the toe below 0.04045 extends linearly to negative values)."""
    return torch.where(encoded <= 0.04045, encoded / 12.92, ((encoded.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


class ChromaGuide(nn.Module):
    """A luma-guided chroma path for photos: JPEG 4:2:0 keeps luma at full resolution and chroma at half,
    in the sRGB-encoded Y'CbCr space. The linear RGB input is taken back to that space; a small conv net
    reads full-resolution Y' beside the upsampled Cb, Cr and predicts a correction to the chroma (its last
    conv starts at zero: the guide starts as the identity); the result goes back to linear RGB."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.register_buffer("to_ycc", RGB_TO_YCC.clone()[:, :, None, None])
        self.register_buffer("to_rgb", torch.linalg.inv(RGB_TO_YCC)[:, :, None, None])
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(width, 2, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        ycc = nn.functional.conv2d(srgb_encode(rgb), self.to_ycc)
        ycc = ycc + nn.functional.pad(self.net(ycc), (0, 0, 0, 0, 1, 0))  # luma kept, chroma corrected
        return srgb_decode(nn.functional.conv2d(ycc, self.to_rgb))


class ChromaGuidedSSRAN(RootPolySkipSSRAN):
    """Variant (not in the paper): RootPolySkipSSRAN (order 3) fed through a ChromaGuide (RGB photos only)."""

    def __init__(self, in_bands: int, out_bands: int, width: int = 64, num_blocks: int = 3, eca_kernel: int = 5):
        if in_bands != 3:
            raise ValueError(f"ssran_chroma_skip restores the chroma of RGB photos: 3 input bands, not {in_bands}")
        super().__init__(in_bands, out_bands, width, num_blocks, eca_kernel)
        self.guide = ChromaGuide()

    def forward(self, msi: torch.Tensor) -> torch.Tensor:
        return super().forward(self.guide(msi))


ARCHITECTURES = dict(zip(ARCHITECTURE_NAMES, (SSRAN, LinearSkipSSRAN, RootPolySkipSSRAN,
                                               functools.partial(RootPolySkipSSRAN, order=4), ChromaGuidedSSRAN),
                         strict=True))


def build_model(arch: str, in_bands: int, out_bands: int, **kwargs) -> nn.Module:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](in_bands, out_bands, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
