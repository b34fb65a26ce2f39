"""Property-based tests (hypothesis) for ssran_edge.tiling: for random frame sizes (1 px up, sizes that
are no multiple of the tile), tile sizes and halos, tiled inference equals whole-frame inference on a
conv-only network whenever the halo covers its receptive radius, and differs when it does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ssran_edge.model import ECA, SSRAN
from ssran_edge.tiling import RECEPTIVE_RADIUS, run_patches, run_tiled, tile_windows, torch_infer

# No example database: the working tree is shared and nothing should be written into it.
PROPERTY = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.integers(1, 40)
tiles = st.integers(1, 48)
seeds = st.integers(0, 2**16)


def conv_stack(depth: int, in_bands: int = 2, out_bands: int = 3, width: int = 6) -> torch.nn.Module:
    """`depth` real 3x3 convs (zero 'same' padding, tanh between): receptive radius = depth."""
    torch.manual_seed(depth)
    layers: list[torch.nn.Module] = []
    channels = in_bands
    for k in range(depth):
        last = k == depth - 1
        layers.append(torch.nn.Conv2d(channels, out_bands if last else width, 3, padding=1))
        if not last:
            layers.append(torch.nn.Tanh())
        channels = width
    return torch.nn.Sequential(*layers).eval()


_STACKS: dict[int, torch.nn.Module] = {}


def stack(depth: int) -> torch.nn.Module:
    if depth not in _STACKS:
        _STACKS[depth] = conv_stack(depth)
    return _STACKS[depth]


def whole_frame(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])[0]
    return y.numpy().transpose(1, 2, 0)


def frame(seed: int, h: int, w: int, bands: int) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, bands), dtype=np.float32)


@pytest.fixture(scope="module")
def ssran_conv_path() -> torch.nn.Module:
    """The real SSRAN with its ECA attention switched off: only the conv path (six 3x3 convs) is left."""
    torch.manual_seed(0)
    model = SSRAN(3, 5, width=8).eval()
    for module in model.modules():
        if isinstance(module, ECA):
            module.forward = lambda t: t
    return model


# --- the windows ---------------------------------------------------------------------------------------

@PROPERTY
@given(h=sizes, w=sizes, tile=tiles, halo=st.integers(0, 12))
def test_kept_regions_cover_every_pixel_exactly_once(h, w, tile, halo):
    counts = np.zeros((h, w), np.int32)
    for (r0, r1, c0, c1), (k0, k1, j0, j1) in tile_windows(h, w, tile, halo):
        assert 0 <= k0 < k1 <= h and 0 <= j0 < j1 <= w
        assert k1 - k0 <= tile and j1 - j0 <= tile
        # the input window holds the kept region grown by the halo (clipped only at the frame border)...
        assert 0 <= r0 <= max(k0 - halo, 0) and min(k1 + halo, h) == r1 <= h
        assert 0 <= c0 <= max(j0 - halo, 0) and min(j1 + halo, w) == c1 <= w
        # ...and is at most a whole tile plus its halo
        assert r1 - r0 <= min(tile, h) + 2 * halo and c1 - c0 <= min(tile, w) + 2 * halo
        counts[k0:k1, j0:j1] += 1
    assert (counts == 1).all()


@PROPERTY
@given(h=sizes, w=sizes, tile=tiles, halo=st.integers(0, 12), batch=st.integers(1, 5), seed=seeds)
def test_a_pointwise_network_is_reproduced_exactly(h, w, tile, halo, batch, seed):
    # identity "network": every output pixel must come from the same input pixel, in either mode
    x = frame(seed, h, w, 2)
    np.testing.assert_array_equal(run_tiled(lambda b: b.copy(), x, 2, tile, halo, batch), x)
    patch = min(tile, h, w)
    np.testing.assert_array_equal(run_patches(lambda b: b.copy(), x, 2, patch, batch), x)


# --- tiled == whole frame on the conv path ---------------------------------------------------------------

@PROPERTY
@given(h=sizes, w=sizes, tile=tiles, depth=st.integers(1, 4), extra=st.integers(0, 3), batch=st.integers(1, 4),
       seed=seeds)
def test_tiled_equals_whole_frame_when_the_halo_covers_the_receptive_radius(h, w, tile, depth, extra, batch, seed):
    model, x = stack(depth), frame(seed, h, w, 2)
    tiled = run_tiled(torch_infer(model), x, 3, tile=tile, halo=depth + extra, batch=batch)
    np.testing.assert_allclose(tiled, whole_frame(model, x), rtol=1e-5, atol=1e-5)


@settings(PROPERTY, max_examples=25)
@given(h=sizes, w=sizes, tile=st.integers(4, 48), extra=st.integers(0, 2), seed=seeds)
def test_ssran_conv_path_tiled_equals_whole_frame(ssran_conv_path, h, w, tile, extra, seed):
    x = frame(seed, h, w, 3)
    tiled = run_tiled(torch_infer(ssran_conv_path), x, 5, tile=tile, halo=RECEPTIVE_RADIUS + extra, batch=4)
    np.testing.assert_allclose(tiled, whole_frame(ssran_conv_path, x), rtol=1e-5, atol=1e-5)


def _cut_by_a_halo(h: int, w: int, tile: int, halo: int) -> bool:
    """Some window ends inside the frame (its edge is the halo's, not the border's)."""
    return any(r0 > 0 or r1 < h or c0 > 0 or c1 < w for (r0, r1, c0, c1), _ in tile_windows(h, w, tile, halo))


@PROPERTY
@given(h=st.integers(2, 40), w=st.integers(2, 40), tile=st.integers(1, 30), depth=st.integers(1, 4),
       short=st.integers(1, 4), seed=seeds)
def test_a_halo_below_the_receptive_radius_leaves_seams(h, w, tile, depth, short, seed):
    halo = depth - short
    assume(halo >= 0 and _cut_by_a_halo(h, w, tile, halo))
    model, x = stack(depth), frame(seed, h, w, 2)
    tiled = run_tiled(torch_infer(model), x, 3, tile=tile, halo=halo, batch=4)
    assert np.abs(tiled - whole_frame(model, x)).max() > 1e-4  # the property above can fail


def test_ssran_seams_with_a_short_halo(ssran_conv_path):
    x = frame(1, 30, 23, 3)
    tiled = run_tiled(torch_infer(ssran_conv_path), x, 5, tile=10, halo=RECEPTIVE_RADIUS - 1, batch=4)
    assert np.abs(tiled - whole_frame(ssran_conv_path, x)).max() > 1e-4
