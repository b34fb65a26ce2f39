"""Named experimental protocols: where the MSI/HSI pairs come from and how they are split.

- `paris`: the real EO-1 pair (ALI 9 bands -> Hyperion 128 bands), 72x72; train columns 0:36,
  test 36:72, as the authors' comment in SSRAN.py gives.
- `pavia`: Pavia University 50x50 crop, MSI simulated with SSRAN's D_103 (4 -> 103); left half
  train, right half test (the paper splits PaviaU by columns too).
- `cave`: 27 CAVE scenes, MSI simulated with the Nikon D700 SRF (RGB -> 31), split by whole scene:
  18 train, 3 validation, 6 test (CAVE_SPLIT says which and why).
- `cave_srgb`: the same scenes and split seen through the `srgb` camera (CIE 1931 -> linear sRGB),
  clipped to [0, 1]: the camera of sRGB photos and video. Training takes them on through the capture
  chain (8-bit sRGB, JPEG; `ssran_edge.conditions`).
- `cave7`: the first CAVE protocol (7 scenes: 5 train, 2 test), kept reproducible for the record.

Validation (checkpoint selection) never touches the test split. On cave it is whole scenes of their
own; on paris/pavia/cave7 it is a strip held out of the training region (the last columns, or the
bottom rows of each training scene), which measures fit more than generalisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssran_edge.card import ModelCard
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
    # The camera matrix D (msi_bands, hsi_bands) where the MSI is simulated (MSI = HSI . D^T); None for
    # a real sensor pair. Augmentations that change a spectrum re-simulate its MSI through it.
    camera: np.ndarray | None = None
    encoding: str = "linear"  # how the frames the model will be fed were stored: "srgb" for photos and video

    @property
    def in_bands(self) -> int:
        return self.train[0].msi.shape[2]

    @property
    def out_bands(self) -> int:
        return self.train[0].hsi.shape[2]


CAVE7_SCENES = ["balloons", "chart_and_stuffed_toy", "egyptian_statue", "flowers", "oil_painting",
                "real_and_fake_apples", "superballs"]
CAVE7_TEST = ["real_and_fake_apples", "superballs"]
CAVE7_VAL_ROWS = 64

# Protocol `cave`: whole scenes, never mixed. The 7 scenes of cave/ are 512x512, the 20 of
# cave_extra/ 256x256 (2x2-binned). Test: the two cave7 test scenes, and four chosen for variety --
# face (human skin, low chroma), glass_tiles (transmissive and specular coloured glass),
# fake_and_real_strawberries (metamers: plastic and real fruit of one colour, the hard case for
# RGB -> spectrum) and cloth (dyed textiles, fine texture). Validation: one scene at each scale and a
# metamer scene -- oil_painting (pigments, 512), fake_and_real_lemons, pompoms (saturated dyes).
CAVE_SPLIT = {
    "train": ["balloons", "chart_and_stuffed_toy", "egyptian_statue", "flowers",  # 512x512
              "beads", "cd", "clay", "fake_and_real_beers", "fake_and_real_food", "fake_and_real_lemon_slices",
              "fake_and_real_sushi", "fake_and_real_tomatoes", "hairs", "paints", "photo_and_face",
              "real_and_fake_peppers", "sponges", "thread_spools"],
    "val": ["oil_painting", "fake_and_real_lemons", "pompoms"],
    "test": ["real_and_fake_apples", "superballs", "face", "glass_tiles", "fake_and_real_strawberries", "cloth"],
}


def shared_data_dir() -> Path:
    """The team's real-data folder: $SSRAN_DATA; else, from a source checkout, ../shared/data beside
    it; else (an installed package, whose files live in site-packages) ../shared/data beside the
    working directory."""
    env = os.environ.get("SSRAN_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "ssran_edge").is_dir():
        return checkout.parent / "shared" / "data"
    return Path.cwd().parent / "shared" / "data"


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
    matrix = srf.matrix_for(None, hsi.shape[2])
    msi = simulate_msi(hsi, matrix)
    wavelengths = read_wavelength_csv(folder / "wavelengths_nm.csv").tolist()
    train, val, test = _split_columns(msi, hsi, 25, 4, "pavia")
    return ProtocolData("pavia", train, val, test, wavelengths, "D_103", srf.band_names, matrix)


def _cave_cube(root: Path, scene: str):
    """A CAVE scene from cave/ (512x512) or cave_extra/ (2x2-binned to 256x256), whichever has it."""
    for folder in ("cave", "cave_extra"):
        if (root / folder / f"{scene}_ms").is_dir():
            return read_cave_scene(root / folder / f"{scene}_ms")
    raise DataError(f"dataset not found: CAVE scene {scene!r} in {root / 'cave'} or {root / 'cave_extra'} "
                    f"(set SSRAN_DATA to the folder holding the data sets)")


def bin2x2(cube: np.ndarray) -> np.ndarray:
    """Mean over 2x2 pixel blocks: what cave_extra/ did to its scenes (a camera with 2x larger pixels)."""
    h, w = cube.shape[0] // 2 * 2, cube.shape[1] // 2 * 2
    return cube[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def load_cave(root: Path, train_resolution: str = "native", camera: str = "nikon_d700") -> ProtocolData:
    """Protocol `cave`: 27 CAVE scenes split by scene (see CAVE_SPLIT). `train_resolution` "binned"
    bins the 512x512 training and validation scenes 2x2, so every scene a patch is cut from has
    cave_extra's scale; "native" keeps both scales. Test scenes are always at their stored scale.
    `camera` "srgb" gives protocol `cave_srgb`: the sRGB camera's frames, clipped to [0, 1]."""
    if train_resolution not in ("native", "binned"):
        raise DataError(f"unknown train resolution {train_resolution!r} (native or binned)")
    srf = load_srf(camera)
    photo = camera == "srgb"
    splits: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    matrix = None
    for split, scenes in CAVE_SPLIT.items():
        for scene in scenes:
            cube = _cave_cube(root, scene)
            matrix = srf.matrix_for(cube.wavelengths, cube.bands) if matrix is None else matrix
            hsi = cube.data
            if split != "test" and train_resolution == "binned" and hsi.shape[0] > 256:
                hsi = bin2x2(hsi)
            msi = simulate_msi(hsi, matrix)
            splits[split].append(Pair(np.clip(msi, 0.0, 1.0) if photo else msi, hsi, scene))
    from ssran_edge.data.readers import CAVE_WAVELENGTHS

    return ProtocolData("cave_srgb" if photo else "cave", splits["train"], splits["val"], splits["test"],
                        CAVE_WAVELENGTHS.tolist(), camera, srf.band_names, matrix, "srgb" if photo else "linear")


def load_cave7(root: Path, scenes: list[str] | None = None) -> ProtocolData:
    """The first CAVE protocol, kept for the record: the 7 full-resolution scenes, 5 to train on
    (rows 0:448; rows 448:512 of the same scenes for validation), 2 to test."""
    folder = _require(root / "cave")
    srf = load_srf("nikon_d700")
    train, val, test = [], [], []
    matrix = None
    for scene in scenes or CAVE7_SCENES:
        cube = read_cave_scene(_require(folder / f"{scene}_ms"))
        if matrix is None:
            matrix = srf.matrix_for(cube.wavelengths, cube.bands)
        msi = simulate_msi(cube.data, matrix)
        if scene in CAVE7_TEST:
            test.append(Pair(msi, cube.data, scene))
        else:
            cut = cube.data.shape[0] - CAVE7_VAL_ROWS
            train.append(Pair(msi[:cut], cube.data[:cut], f"{scene}[:{cut}]"))
            val.append(Pair(msi[cut:], cube.data[cut:], f"{scene}[{cut}:]"))
    from ssran_edge.data.readers import CAVE_WAVELENGTHS

    return ProtocolData("cave7", train, val, test, CAVE_WAVELENGTHS.tolist(), "nikon_d700", srf.band_names, matrix)


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
    train, val, test, wavelengths, bands, matrices = [], [], [], None, None, []
    for path in [*train_files, *test_files]:
        cube = read_cube(path, variable)
        if cube.encoding != "linear":  # a photo: its values are not light, and it has no spectra to learn
            raise DataError(f"{path}: an sRGB-encoded photo; the files protocol takes hyperspectral cubes")
        if cube.valid is not None:  # a patch across nodata would teach the network fill values
            raise DataError(f"{path}: {int((~cube.valid).sum())} nodata pixels; training and test cubes must be "
                            "whole (crop the nodata out)")
        if bands is not None and cube.bands != bands:
            raise DataError(f"{path}: {cube.bands} bands, the other cubes have {bands}")
        bands = cube.bands
        wavelengths = wavelengths if cube.wavelengths is None else cube.wavelengths.tolist()
        matrices.append(sensor.matrix_for(cube.wavelengths, cube.bands))
        msi = simulate_msi(cube.data, matrices[-1])
        if path in test_files:
            test.append(Pair(msi, cube.data, str(path)))
            continue
        cut = cube.data.shape[0] - max(4, int(round(cube.data.shape[0] * val_fraction)))
        if cut < 4:
            raise DataError(f"{path}: {cube.data.shape[0]} rows are too few to hold out validation rows")
        train.append(Pair(msi[:cut], cube.data[:cut], f"{path}[:{cut}]"))
        val.append(Pair(msi[cut:], cube.data[cut:], f"{path}[{cut}:]"))
    # One camera matrix when every cube saw the same one (cubes of different wavelength grids do not).
    camera = matrices[0] if all(np.array_equal(m, matrices[0]) for m in matrices) else None
    return ProtocolData("files", train, val, test, wavelengths, srf, sensor.band_names, camera)


PROTOCOLS = {"paris": load_paris, "pavia": load_pavia, "cave": load_cave, "cave_srgb": load_cave, "cave7": load_cave7}


def protocol_of_card(card: ModelCard, root: str | Path | None = None, name: str | None = None) -> ProtocolData:
    """The data a model was trained and tested on, from its model card (named or "files")."""
    training = card.training
    files = {k: training.get(k) for k in ("train_files", "test_files", "srf", "variable", "train_resolution",
                                          "fold_validation")}
    return load_protocol(name or card.protocol or "", root, **files)


def load_protocol(name: str, root: str | Path | None = None, train_resolution: str | None = None,
                  fold_validation: bool | None = False, **files) -> ProtocolData:
    """A named protocol, or "files" with train_files / test_files / srf (/ variable) given.
    `train_resolution` (cave only): native or binned, see load_cave. `fold_validation`: the
    validation pairs join the training ones (they stay in `val` too, as seen data); test never moves."""
    data = _load_protocol(name, root, train_resolution, **files)
    if fold_validation:
        data.train = data.train + data.val
    return data


def _load_protocol(name: str, root: str | Path | None, train_resolution: str | None, **files) -> ProtocolData:
    if name == "files":
        return load_files(files.get("train_files") or [], files.get("test_files") or [],
                          files.get("srf") or "", files.get("variable"))
    if name not in PROTOCOLS:
        raise DataError(f"unknown protocol {name!r}; choose one of {', '.join([*PROTOCOLS, 'files'])}")
    root = Path(root) if root else shared_data_dir()
    if name in ("cave", "cave_srgb"):
        return load_cave(root, train_resolution or "native", "srgb" if name == "cave_srgb" else "nikon_d700")
    return PROTOCOLS[name](root)
