"""Named experimental protocols: where the MSI/HSI pairs come from and how they are split.

- `paris`: the real EO-1 pair (ALI 9 bands -> Hyperion 128 bands), 72x72; train columns 0:36,
  test 36:72, as the authors' comment in SSRAN.py gives.
- `pavia`: Pavia University 50x50 crop, MSI simulated with SSRAN's D_103 (4 -> 103); left half
  train, right half test (the paper splits PaviaU by columns too).
- `cave`: CAVE scenes, MSI simulated with the Nikon D700 SRF (RGB -> 31); 5 scenes train, 2 test.

Validation (checkpoint selection) never touches the test split: it is a strip held out of the
training region (the last columns for paris/pavia, the bottom rows of each training scene for cave).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssran_edge.data.readers import load_mat_variables, read_cave_scene, read_mat, read_wavelength_csv
from ssran_edge.errors import DataError
from ssran_edge.srf import load_srf, simulate_msi


@dataclass
class Pair:
    """One co-registered MSI/HSI region: (H, W, msi_bands) and (H, W, hsi_bands) float32."""

    msi: np.ndarray
    hsi: np.ndarray
    name: str = ""


@dataclass
class ProtocolData:
    name: str
    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    wavelengths: list[float] | None
    srf: str  # bundled SRF name, or a description of the real sensor pair
    msi_band_names: list[str] = field(default_factory=list)

    @property
    def in_bands(self) -> int:
        return self.train[0].msi.shape[2]

    @property
    def out_bands(self) -> int:
        return self.train[0].hsi.shape[2]


CAVE_SCENES = ["balloons", "chart_and_stuffed_toy", "egyptian_statue", "flowers", "oil_painting",
               "real_and_fake_apples", "superballs"]
CAVE_TEST = ["real_and_fake_apples", "superballs"]
CAVE_VAL_ROWS = 64


def shared_data_dir() -> Path:
    """The team's real-data folder: $SSRAN_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("SSRAN_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"dataset not found: {path} (set SSRAN_DATA to the folder holding the data sets)")
    return path


def hyperion_wavelengths(channels: np.ndarray) -> np.ndarray:
    """Nominal Hyperion band centres (nm) for 1-based channel numbers (VNIR 1-70, SWIR 71-242)."""
    channels = np.asarray(channels, dtype=np.float64).ravel()
    return np.where(channels <= 70, 355.59 + 10.175 * (channels - 1), 851.92 + 10.09 * (channels - 71))


def _split_columns(msi: np.ndarray, hsi: np.ndarray, train_end: int, val_cols: int, name: str):
    train = Pair(msi[:, : train_end - val_cols], hsi[:, : train_end - val_cols], f"{name}[:, :{train_end - val_cols}]")
    val = Pair(msi[:, train_end - val_cols: train_end], hsi[:, train_end - val_cols: train_end],
               f"{name}[:, {train_end - val_cols}:{train_end}]")
    test = Pair(msi[:, train_end:], hsi[:, train_end:], f"{name}[:, {train_end}:]")
    return [train], [val], [test]


def load_paris(root: Path) -> ProtocolData:
    path = _require(root / "paris_hyperion_ali" / "paris_data_hs_ms.mat")
    variables = load_mat_variables(path, ["HSim", "MSim", "non_del_bands"])
    hsi = read_mat(path, "HSim").data
    msi = read_mat(path, "MSim").data
    wavelengths = hyperion_wavelengths(variables["non_del_bands"]).round(2).tolist()
    train, val, test = _split_columns(msi, hsi, 36, 5, "paris")
    ali = ["1p", "1", "2", "3", "4", "4p", "5p", "5", "7"]
    return ProtocolData("paris", train, val, test, wavelengths, "real EO-1 ALI (no SRF)", ali)


def load_pavia(root: Path) -> ProtocolData:
    folder = _require(root / "pavia_university")
    hsi = read_mat(folder / "paviaU_subimg_50x50x103.mat", "paviaU_subimg").data / 8000.0  # PaviaU DN full scale
    srf = load_srf("D_103")
    msi = simulate_msi(hsi, srf.matrix_for(None, hsi.shape[2]))
    wavelengths = read_wavelength_csv(folder / "wavelengths_nm.csv").tolist()
    train, val, test = _split_columns(msi, hsi, 25, 4, "pavia")
    return ProtocolData("pavia", train, val, test, wavelengths, "D_103", srf.band_names)


def load_cave(root: Path, scenes: list[str] | None = None) -> ProtocolData:
    folder = _require(root / "cave")
    srf = load_srf("nikon_d700")
    train, val, test = [], [], []
    matrix = None
    for scene in scenes or CAVE_SCENES:
        cube = read_cave_scene(_require(folder / f"{scene}_ms"))
        if matrix is None:
            matrix = srf.matrix_for(cube.wavelengths, cube.bands)
        msi = simulate_msi(cube.data, matrix)
        if scene in CAVE_TEST:
            test.append(Pair(msi, cube.data, scene))
        else:
            cut = cube.data.shape[0] - CAVE_VAL_ROWS
            train.append(Pair(msi[:cut], cube.data[:cut], f"{scene}[:{cut}]"))
            val.append(Pair(msi[cut:], cube.data[cut:], f"{scene}[{cut}:]"))
    from ssran_edge.data.readers import CAVE_WAVELENGTHS

    return ProtocolData("cave", train, val, test, CAVE_WAVELENGTHS.tolist(), "nikon_d700", srf.band_names)


def load_files(train_files: list[str], test_files: list[str], srf: str, variable: str | None = None,
               val_fraction: float = 0.125) -> ProtocolData:
    """Your own data: hyperspectral cubes (any format read_cube reads) seen through an SRF (bundled
    name or file). Train cubes lose their bottom `val_fraction` of rows to validation."""
    from ssran_edge.data.readers import read_cube

    if not train_files or not test_files:
        raise DataError("the files protocol needs --train-files and --test-files (hyperspectral cubes)")
    both = sorted({str(p) for p in train_files} & {str(p) for p in test_files})
    if both:
        raise DataError(f"{both[0]}: given as a training and a test file; the test cubes must be held out")
    sensor = load_srf(srf)
    train, val, test, wavelengths, bands = [], [], [], None, None
    for path in [*train_files, *test_files]:
        cube = read_cube(path, variable)
        if bands is not None and cube.bands != bands:
            raise DataError(f"{path}: {cube.bands} bands, the other cubes have {bands}")
        bands = cube.bands
        wavelengths = wavelengths if cube.wavelengths is None else cube.wavelengths.tolist()
        msi = simulate_msi(cube.data, sensor.matrix_for(cube.wavelengths, cube.bands))
        if path in test_files:
            test.append(Pair(msi, cube.data, str(path)))
            continue
        cut = cube.data.shape[0] - max(4, int(round(cube.data.shape[0] * val_fraction)))
        if cut < 4:
            raise DataError(f"{path}: {cube.data.shape[0]} rows are too few to hold out validation rows")
        train.append(Pair(msi[:cut], cube.data[:cut], f"{path}[:{cut}]"))
        val.append(Pair(msi[cut:], cube.data[cut:], f"{path}[{cut}:]"))
    return ProtocolData("files", train, val, test, wavelengths, srf, sensor.band_names)


PROTOCOLS = {"paris": load_paris, "pavia": load_pavia, "cave": load_cave}


def protocol_of_card(card: dict, root: str | Path | None = None, name: str | None = None) -> ProtocolData:
    """The data a model was trained and tested on, from its model card (named or "files")."""
    training = card.get("training", {})
    files = {k: training.get(k) for k in ("train_files", "test_files", "srf", "variable")}
    return load_protocol(name or card.get("protocol", ""), root, **files)


def load_protocol(name: str, root: str | Path | None = None, **files) -> ProtocolData:
    """A named protocol, or "files" with train_files / test_files / srf (/ variable) given."""
    if name == "files":
        return load_files(files.get("train_files") or [], files.get("test_files") or [],
                          files.get("srf") or "", files.get("variable"))
    if name not in PROTOCOLS:
        raise DataError(f"unknown protocol {name!r}; choose one of {', '.join([*PROTOCOLS, 'files'])}")
    return PROTOCOLS[name](Path(root) if root else shared_data_dir())
