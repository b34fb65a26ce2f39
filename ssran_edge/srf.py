"""Sensor spectral response functions (SRFs) and MSI simulation: MSI = HSI . D^T.

An SRF is either a D matrix (msi_bands x hsi_bands, already in the cube's band space) or a CSV curve
table (`wavelength_nm`, one column per band) resampled to the cube's band centres. Each row of D is
normalised to unit sum, so an MSI band is a weighted mean of HSI bands and a flat spectrum of 1 (a white
reflector) reads 1 in every band.

`srgb` is the camera of sRGB-encoded photos and video: the CIE 1931 2-degree colour-matching functions
taken to linear sRGB by the IEC 61966-2-1 matrix. A colour-matching camera has negative lobes (red
responds negatively near 500 nm); they are kept, where a measured curve's negative values (noise around
a black level) are clipped to zero with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssran_edge.errors import DataError
from ssran_edge.io import special_file

log = logging.getLogger("ssran_edge.srf")

BUNDLED_DIR = Path(__file__).parent / "srfs"
BUNDLED = {
    "D_103": "D_103.mat",
    "nikon_d700": "nikon_d700.csv",
    "sentinel2a": "sentinel2a.csv",
    "landsat8": "landsat8.csv",
    "srgb": "cie1931_2deg_xyz_cmf.csv",  # taken to sRGB by srgb_camera()
}
# IEC 61966-2-1: CIE XYZ (D65-relative) -> linear sRGB R, G, B.
XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986],
                        [-0.9689, 1.8758, 0.0415],
                        [0.0557, -0.2040, 1.0570]])


@dataclass
class SRF:
    """Either `matrix` (bands x hsi_bands, fixed band space) or `curves` sampled at `wavelengths`."""

    name: str
    band_names: list[str]
    matrix: np.ndarray | None = None
    wavelengths: np.ndarray | None = None  # nm, for curves
    curves: np.ndarray | None = None  # (samples, bands)
    signed: bool = False  # negative responses are real (a colour-matching camera), not noise to clip

    @property
    def bands(self) -> int:
        return len(self.band_names)

    def matrix_for(self, cube_wavelengths: np.ndarray | None, hsi_bands: int) -> np.ndarray:
        """The (msi_bands, hsi_bands) matrix D for a cube, rows normalised to unit sum."""
        if self.matrix is not None:
            if self.matrix.shape[1] != hsi_bands:
                raise DataError(f"SRF {self.name} is a {self.matrix.shape[0]}x{self.matrix.shape[1]} matrix; "
                                f"the cube has {hsi_bands} bands")
            return _normalise_rows(self.matrix, self.name, self.band_names)
        if cube_wavelengths is None:
            raise DataError(f"SRF {self.name} is a curve table: the cube needs band wavelengths to use it")
        centres = np.asarray(cube_wavelengths, dtype=np.float64)
        if centres.shape != (hsi_bands,):
            raise DataError(f"{len(centres)} wavelengths given for a cube of {hsi_bands} bands")
        if not np.isfinite(centres).all() or (np.diff(centres) <= 0).any():
            raise DataError(f"SRF {self.name}: the cube's wavelengths must be finite and increasing to resample "
                            "a curve table onto them")
        matrix = resample_curves(self.wavelengths, self.curves, centres)
        return _normalise_rows(matrix if self.signed else np.clip(matrix, 0.0, None), self.name, self.band_names)


def _normalise_rows(matrix: np.ndarray, name: str, band_names: list[str]) -> np.ndarray:
    sums = matrix.sum(axis=1)
    empty = [band_names[i] for i in np.flatnonzero(sums <= 0)]
    if empty:
        raise DataError(f"SRF {name}: band(s) {', '.join(empty)} have no response over the cube's wavelengths")
    return (matrix / sums[:, None]).astype(np.float32)


def resample_curves(curve_nm: np.ndarray, curves: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Response of each SRF band within each HSI band: the mean of the curve over the band's bin
    (bounded by midpoints between centres) where the curve is sampled finer than the cube, else the
    curve interpolated at the centre. Returns (bands, len(centres))."""
    edges = np.concatenate([[centres[0] - (centres[1] - centres[0]) / 2 if len(centres) > 1 else centres[0] - 5],
                            (centres[1:] + centres[:-1]) / 2,
                            [centres[-1] + (centres[-1] - centres[-2]) / 2 if len(centres) > 1 else centres[-1] + 5]])
    out = np.empty((curves.shape[1], len(centres)))
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (curve_nm >= lo) & (curve_nm < hi)
        if inside.sum() >= 2:
            out[:, i] = curves[inside].mean(axis=0)
        else:
            out[:, i] = [np.interp(centres[i], curve_nm, c, left=0.0, right=0.0) for c in curves.T]
    return out


def srgb_camera(cmf: SRF) -> SRF:
    """The sRGB camera from CIE colour-matching functions x, y, z: XYZ_TO_SRGB . (x, y, z), each band
    scaled so that a flat spectrum of 1 gives 1 (equal-energy white is R = G = B). Negative lobes kept."""
    curves = cmf.curves @ XYZ_TO_SRGB.T
    curves /= np.trapezoid(curves, cmf.wavelengths, axis=0) / np.ptp(cmf.wavelengths)
    return SRF("srgb", ["R", "G", "B"], wavelengths=cmf.wavelengths, curves=curves, signed=True)


def load_srf(name_or_path: str | Path) -> SRF:
    """A bundled SRF by name (see BUNDLED) or a file: .mat holding a matrix `D`, or a CSV curve table."""
    if str(name_or_path) == "srgb":
        return srgb_camera(_read_curve_table(BUNDLED_DIR / BUNDLED["srgb"], "cie1931_2deg_xyz_cmf"))
    path = BUNDLED_DIR / BUNDLED[name_or_path] if str(name_or_path) in BUNDLED else Path(name_or_path)
    name = str(name_or_path)
    if kind := special_file(path):
        raise DataError(f"SRF {name}: is {kind}, not a file")
    if not path.is_file():
        raise DataError(f"SRF {name}: no such file (bundled SRFs: {', '.join(BUNDLED)})")
    if path.suffix.lower() == ".mat":
        from ssran_edge.data.matlab import load_mat_variables

        variables = load_mat_variables(path)
        matrices = {k: v for k, v in variables.items() if isinstance(v, np.ndarray) and v.ndim == 2}
        key = "D" if "D" in matrices else (next(iter(matrices)) if len(matrices) == 1 else None)
        if key is None:
            raise DataError(f"SRF {path}: expected a matrix named D, found {sorted(variables)}")
        if matrices[key].dtype.kind == "c":  # a cast would drop the imaginary part without a word
            raise DataError(f"SRF {path}: matrix {key} is complex; an SRF is real")
        if matrices[key].dtype.kind not in "biuf":
            raise DataError(f"SRF {path}: {key} is not a numeric matrix (a MATLAB cell or struct array?)")
        matrix = np.asarray(matrices[key], dtype=np.float64)
        if not np.isfinite(matrix).all() or (matrix < 0).any():
            raise DataError(f"SRF {path}: matrix has NaN/Inf or negative weights")
        return SRF(name, [f"band{i + 1}" for i in range(matrix.shape[0])], matrix=matrix)
    return _read_curve_table(path, name)


def _read_curve_table(path: Path, name: str) -> SRF:
    """A CSV curve table: wavelength_nm, then one column per band."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]  # Excel: BOM
        header = [h.strip() for h in lines[0].split(",")]
        table = np.asarray([[float(v) for v in line.split(",")] for line in lines[1:]], dtype=np.float64)
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise DataError(f"SRF {path}: not a numeric CSV curve table ({exc})") from None
    if header[0] != "wavelength_nm" or table.ndim != 2 or table.shape[1] != len(header) or table.shape[1] < 2:
        raise DataError(f"SRF {path}: expected columns wavelength_nm, <band>, <band>, ...")
    if not np.isfinite(table).all():
        raise DataError(f"SRF {path}: NaN/Inf in the curve table")
    order = np.argsort(table[:, 0])
    curves = table[order, 1:]
    if (curves < 0).any():
        log.warning("SRF %s: %d negative response value(s) (down to %.3g) clipped to 0; a measured curve's "
                    "negatives are noise around its black level", name, int((curves < 0).sum()), curves.min())
    return SRF(name, header[1:], wavelengths=table[order, 0], curves=np.clip(curves, 0, None))


def simulate_msi(hsi: np.ndarray, srf_matrix: np.ndarray) -> np.ndarray:
    """(H, W, hsi_bands) cube -> (H, W, msi_bands) MSI, MSI = HSI . D^T."""
    if hsi.shape[-1] != srf_matrix.shape[1]:
        raise DataError(f"SRF expects {srf_matrix.shape[1]} HSI bands, the cube has {hsi.shape[-1]}")
    return np.tensordot(hsi, srf_matrix.T.astype(np.float32), axes=1).astype(np.float32)
