"""Camera raw files through LibRaw: DNGs written here with pidng (a Bayer mosaic we know pixel by pixel) are read
back by `read_raw` and compared with the image they were made from, and with LibRaw's own postprocess."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

rawpy = pytest.importorskip("rawpy")
pytest.importorskip("pidng")

from pidng.core import RAW2DNG, DNGTags, Tag  # noqa: E402
from pidng.defs import CFAPattern, DNGVersion, PhotometricInterpretation  # noqa: E402

from ssran_edge.data.raw import RAW_SUFFIXES, raw_camera, read_raw  # noqa: E402
from ssran_edge.errors import DataError, MissingExtra  # noqa: E402
from ssran_edge.srf import load_srf  # noqa: E402

BLACK, WHITE = 512, 16383  # a 14-bit sensor with a black offset, as Nikon's
NIKON = ("NIKON CORPORATION", "NIKON D700")
ACME = ("ACME", "ACME X1")
# a plausible camera matrix (XYZ -> camera, x10000) so LibRaw can derive daylight multipliers for ACME
MATRIX = [6847, -614, -1014, -4669, 12737, 2139, -1197, 2488, 6846]


def write_dng(path: Path, mosaic: np.ndarray, camera: tuple[str, str], orientation: int = 1,
              matrix: list[int] | None = None) -> Path:
    """An uncompressed 16-bit RGGB DNG of `mosaic` (uint16 DNs) with our black and white levels."""
    h, w = mosaic.shape[:2]
    tags = DNGTags()
    for tag, value in ((Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, orientation), (Tag.BitsPerSample, 16), (Tag.BlackLevel, BLACK),
                       (Tag.WhiteLevel, WHITE), (Tag.Make, camera[0]), (Tag.Model, camera[1]),
                       (Tag.UniqueCameraModel, " ".join(camera)), (Tag.DNGVersion, DNGVersion.V1_4),
                       (Tag.DNGBackwardVersion, DNGVersion.V1_2)):
        tags.set(tag, value)
    if mosaic.ndim == 2:
        tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
        tags.set(Tag.SamplesPerPixel, 1)
        tags.set(Tag.CFARepeatPatternDim, [2, 2])
        tags.set(Tag.CFAPattern, CFAPattern.RGGB)
    else:  # a linear DNG: three values per pixel already
        tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Linear_Raw)
        tags.set(Tag.SamplesPerPixel, 3)
        tags.set(Tag.BitsPerSample, [16, 16, 16])
    if matrix is not None:
        tags.set(Tag.ColorMatrix1, [[v, 10000] for v in matrix])
        tags.set(Tag.CalibrationIlluminant1, 21)  # D65
    writer = RAW2DNG()
    writer.options(tags, path=str(path.parent), compress=False)
    return Path(writer.convert(mosaic, filename=path.name))


def d700_gains() -> np.ndarray:
    sums = load_srf("nikon_d700").curves.sum(axis=0)  # R, G, B columns
    return (sums[1] / sums).astype(np.float32)


def known_image(h: int = 64, w: int = 96) -> np.ndarray:
    """(h, w, 3) linear values in [0, 1]: smooth gradients, flat patches on whole quads, and a patch of what
    the D700 records for a flat spectrum (channel in proportion to its curve's sum)."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    image = np.stack([0.05 + 0.9 * x, 0.1 + 0.8 * y, 0.9 - 0.6 * x * y], axis=-1)
    image[8:24, 8:24] = (0.7, 0.2, 0.1)
    image[8:24, 40:56] = (0.0, 0.0, 0.0)
    image[40:56, 8:24] = (1.0, 1.0, 1.0)
    image[40:56, 40:56] = 0.5 / d700_gains()  # the flat-spectrum patch
    return image


def mosaic_of(image: np.ndarray) -> np.ndarray:
    """The RGGB mosaic a sensor with our levels records of `image`: one channel per site, 14-bit DNs."""
    h, w = image.shape[:2]
    site = np.zeros((h, w), dtype=int)
    site[0::2, 1::2] = site[1::2, 0::2] = 1
    site[1::2, 1::2] = 2
    values = np.take_along_axis(image, site[..., None], axis=2)[..., 0]
    return np.round(BLACK + values * (WHITE - BLACK)).astype(np.uint16)


def quads_of(image: np.ndarray) -> np.ndarray:
    """What each 2x2 quad measured of `image`: R at its R site, the mean of its two G sites, B at its B site."""
    return np.stack([image[0::2, 0::2, 0], (image[0::2, 1::2, 1] + image[1::2, 0::2, 1]) / 2,
                     image[1::2, 1::2, 2]], axis=-1)


def test_pidng_writes_a_dng_libraw_reads(tmp_path):
    mosaic = mosaic_of(known_image())
    path = write_dng(tmp_path / "d700.dng", mosaic, NIKON)
    with rawpy.imread(str(path)) as raw:
        assert np.array_equal(raw.raw_image_visible, mosaic)
        assert raw.raw_pattern.tolist() == [[0, 1], [3, 2]] and raw.color_desc == b"RGBG"
        assert raw.black_level_per_channel == [BLACK] * 4 and raw.white_level == WHITE


def test_round_trip_bundled_camera(tmp_path):
    image = known_image()
    path = write_dng(tmp_path / "d700.dng", mosaic_of(image), NIKON)
    cube = read_raw(path)
    gains = d700_gains()
    expected = quads_of(image) * gains
    assert cube.data.shape == (32, 48, 3) and cube.data.dtype == np.float32
    assert (cube.camera, cube.encoding, cube.source, cube.wavelengths) == ("nikon_d700", "linear", str(path), None)
    diff = np.abs(cube.data - expected)
    # 14-bit quantisation: half a DN of the 15871 between black and white, times the largest gain
    assert diff.max() <= 0.5 / (WHITE - BLACK) * gains.max() + 1e-6
    assert diff.mean() <= 1e-4
    flat = cube.data[20:28, 20:28].reshape(-1, 3)  # the flat-spectrum patch comes out grey
    assert np.allclose(flat, 0.5, atol=1e-4)


def test_orientation_and_levels_match_libraw(tmp_path):
    """Our numpy binning against LibRaw's own half-size output (no balance: a camera LibRaw knows nothing
    of), for each EXIF orientation: same pixels, same place, to 16-bit rounding."""
    mosaic = mosaic_of(known_image())
    for orientation, shape in ((1, (32, 48)), (3, (32, 48)), (6, (48, 32)), (8, (48, 32))):
        path = write_dng(tmp_path / f"acme{orientation}.dng", mosaic, ACME, orientation)
        cube = read_raw(path)
        with rawpy.imread(str(path)) as raw:
            libraw = raw.postprocess(output_color=rawpy.ColorSpace.raw, gamma=(1, 1), no_auto_bright=True,
                                     output_bps=16, user_wb=[1, 1, 1, 1], half_size=True, adjust_maximum_thr=0)
        assert cube.data.shape[:2] == shape
        assert np.abs(cube.data - libraw / 65535).max() < 5e-5, orientation


def test_unbundled_camera_balanced_with_daylight_multipliers(tmp_path, caplog):
    image = known_image()
    path = write_dng(tmp_path / "acme.dng", mosaic_of(image), ACME, matrix=MATRIX)
    with rawpy.imread(str(path)) as raw:
        r, g, b, _ = raw.daylight_whitebalance
    assert (r, g, b) != (1, 1, 1) and min(r, g, b) > 0  # LibRaw derived them from the DNG's matrix
    with caplog.at_level(logging.INFO, logger="ssran_edge"):
        cube = read_raw(path)
    assert cube.camera == "ACME X1"
    assert np.abs(cube.data - quads_of(image) * np.array([r / g, 1, b / g])).max() < 1e-4
    assert "daylight multipliers" in caplog.text and "ACME X1 is not a bundled camera" in caplog.text


def test_no_multipliers_leaves_the_raw_response(tmp_path, caplog):
    image = known_image()
    path = write_dng(tmp_path / "acme.dng", mosaic_of(image), ACME)  # no matrix: LibRaw has nothing
    with caplog.at_level(logging.INFO, logger="ssran_edge"):
        cube = read_raw(path)
    assert np.abs(cube.data - quads_of(image)).max() < 1e-4
    assert "not balanced" in caplog.text


def test_highlights_above_one_are_kept(tmp_path, caplog):
    image = np.ones((32, 32, 3))  # every site at the white level (LibRaw wants 22 px or more)
    path = write_dng(tmp_path / "white.dng", mosaic_of(image), NIKON)
    with caplog.at_level(logging.INFO, logger="ssran_edge"):
        data = read_raw(path).data
    assert np.allclose(data[..., 0], d700_gains()[0]) and data.max() > 1
    assert "100% of pixels reach the sensor's white level" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "text"])
def test_corrupt_file_is_one_line_data_error(tmp_path, damage):
    good = write_dng(tmp_path / "good.dng", mosaic_of(known_image()), NIKON).read_bytes()
    blob = {"truncated": good[:200], "flipped": good[:8] + bytes(b ^ 0xFF for b in good[8:]),
            "empty": b"", "text": b"not a raw file\n" * 10}[damage]
    path = tmp_path / f"{damage}.nef"
    path.write_bytes(blob)
    with pytest.raises(DataError) as info:
        read_raw(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: unreadable raw file (LibRaw")


def test_missing_file_and_non_bayer_refused(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_raw(tmp_path / "absent.dng")
    linear = (BLACK + 1000 * np.ones((32, 48, 3))).astype(np.uint16)
    path = write_dng(tmp_path / "linear.dng", linear, ACME)
    with pytest.raises(DataError, match=r"linear\.dng: unsupported raw file: not a colour mosaic"):
        read_raw(path)


def test_camera_names_and_suffixes(tmp_path):
    mosaic = mosaic_of(known_image(8, 8))
    assert raw_camera(write_dng(tmp_path / "a.dng", mosaic, NIKON)) == "nikon_d700"
    assert raw_camera(write_dng(tmp_path / "b.dng", mosaic, ACME)) == "ACME X1"
    assert raw_camera(write_dng(tmp_path / "c.dng", mosaic, ("Nikon", "D700"))) == "nikon_d700"
    (tmp_path / "d.cr3").write_bytes(b"\0\0\0\x18ftypcrx ")  # not TIFF-structured: no camera known
    assert raw_camera(tmp_path / "d.cr3") is None
    assert ".raw" not in RAW_SUFFIXES and {".dng", ".nef", ".cr2", ".cr3", ".arw"} <= set(RAW_SUFFIXES)


def test_without_rawpy_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rawpy", None)
    with pytest.raises(MissingExtra, match=r"pip install 'ssran-edge\[raw\]'"):
        read_raw(tmp_path / "photo.dng")
