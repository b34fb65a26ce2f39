"""SSRAN on xarray: a multispectral DataArray (band, y, x) in, a hyperspectral one (wavelength, y, x) out.

    import rioxarray
    from ssran_edge.xarray import reconstruct

    msi = rioxarray.open_rasterio("scene.tif", masked=True, chunks={"x": 1024, "y": 1024})
    hsi = reconstruct(msi, model="cave")          # lazy on a dask-backed array
    hsi.rio.to_raster("hsi.tif")                  # CRS and transform kept

An API over the runtime, like the CLI: runs through the same runners as `ssran-edge run` (ONNX
Runtime by default, no torch). On a dask-backed array each chunk is one window of `run`: the chunk
plus `halo` pixels of its neighbours (`dask.array.overlap`), tiled inside exactly as `run` tiles a
window, so with chunks of `run --window`'s size the numbers are `run`'s. NaN pixels (nodata, with
rioxarray's `masked=True`) are filled before inference and NaN in the output. The [geo] extra.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ssran_edge.errors import DataError
from ssran_edge.tiling import fill_masked, run_tiled


def _runner(model, backend: str, device: str):
    from ssran_edge.runtime.backends import opened_runner

    return opened_runner(model, backend, device, onnx_for=_export_once)


def _export_once(weights):
    from ssran_edge.export.onnx_export import cached_onnx  # only for weights shipped without an ONNX

    return cached_onnx(weights)


def _reconstruct_block(block: np.ndarray, model, backend: str, device: str, tile: int, halo: int) -> np.ndarray:
    """(bands, h, w) -> (out_bands, h, w): one window, as `run` does it (fill, tile, NaN where masked)."""
    selection = _runner(model, backend, device)
    msi = np.ascontiguousarray(np.moveaxis(np.asarray(block, np.float32), 0, -1))
    valid = np.isfinite(msi).all(axis=2)
    if valid.all():
        valid = None
    msi = fill_masked(np.nan_to_num(msi), valid)
    hsi = run_tiled(selection.runner.infer, msi, selection.runner.out_bands, tile=tile, halo=halo, batch=1)
    if valid is not None:
        hsi[~valid] = np.nan
    return np.moveaxis(hsi, -1, 0)


def reconstruct(da, model: Any = None, *, backend: str = "auto", device: str = "", tile: int = 0, halo: int = 8,
                band_dim: str = "band"):
    """A (band, y, x) DataArray of the model's input bands -> a (wavelength, y, x) float32 DataArray with
    the model card in attrs and the CRS/transform of `da` (rioxarray) kept. Dask-backed input stays
    lazy: one task per chunk; the band dimension is made one chunk."""
    import xarray as xr

    if not isinstance(da, xr.DataArray):
        raise DataError(f"reconstruct takes an xarray.DataArray (band, y, x), got {type(da).__name__}")
    if band_dim not in da.dims or da.ndim != 3:
        raise DataError(f"reconstruct takes a (band, y, x) DataArray; got dims {da.dims} (band_dim={band_dim!r})")
    spatial = [d for d in da.dims if d != band_dim]
    da = da.transpose(band_dim, *spatial)
    selection = _runner(model, backend, device)
    runner = selection.runner
    if da.sizes[band_dim] != runner.in_bands:
        raise DataError(f"the DataArray has {da.sizes[band_dim]} bands, the model takes {runner.in_bands}; select "
                        f"them first, e.g. da.isel({band_dim}=[...])")
    tile = tile or selection.tile
    kwargs = dict(model=model, backend=backend, device=device, tile=tile, halo=halo)
    if da.chunks is None:  # in memory: the whole array is one window, as `ssran-edge predict` runs it
        data = _reconstruct_block(da.values, **kwargs)
    else:
        import dask.array as dsa

        x = da.data.rechunk({0: -1}).astype(np.float32)
        depth = {0: 0, 1: halo, 2: halo}
        grown = dsa.overlap.overlap(x, depth=depth, boundary="none")
        out = grown.map_blocks(_reconstruct_block, dtype=np.float32,
                               chunks=((runner.out_bands,), *grown.chunks[1:]), **kwargs)
        data = dsa.overlap.trim_internal(out, depth, boundary="none")
    wavelengths = selection.wavelengths or list(range(runner.out_bands))
    coords = {"wavelength": ("wavelength", np.asarray(wavelengths, np.float32), {"units": "nm"})}
    coords.update({d: da.coords[d] for d in spatial if d in da.coords})
    card = selection.card.to_dict() if selection.card is not None else {}
    attrs = {"long_name": "reflectance", "ssran_edge_model": str(selection.model),
             "ssran_edge_backend": selection.backend, "ssran_edge_model_card": json.dumps(card)}
    out = xr.DataArray(data, dims=("wavelength", *spatial), coords=coords, attrs=attrs, name="hsi")
    return _keep_georeferencing(da, out)


def _keep_georeferencing(source, out):
    """The CRS and transform of a rioxarray-opened array, on the result (nodata: NaN)."""
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)
    except ImportError:
        return out
    crs = source.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
    if source.rio.x_dim in out.dims and source.rio.y_dim in out.dims:
        out = out.rio.write_transform(source.rio.transform(recalc=False))
    return out.rio.write_nodata(np.nan, encoded=False)
