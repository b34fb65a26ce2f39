"""Photos in: every format through the one decoder (`read_picture`), what it converts (orientation, alpha,
palette, grey, an ICC profile) and what it says about the encoding; then the whole path through the real
CLI: an 8-bit sRGB PNG through `predict` and a folder of them through `run` give the cube of the linear
.npy decoded independently (Pillow + colour-science, not our code), and a DNG through `predict` gives the
cube of the linear image it was made from."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ssran_edge.data.images import orient, read_picture
from ssran_edge.data.readers import read_cube
from ssran_edge.encoding import srgb_table, to_linear
from ssran_edge.errors import DataError
from tests.conftest import REPO


def photo(h: int = 24, w: int = 32) -> np.ndarray:
    """Smooth 8-bit colours (gradients, the kind the model sees in a scene), (h, w, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    return (np.stack([0.1 + 0.8 * x, 0.2 + 0.7 * y, 0.9 - 0.7 * x * y], axis=-1) * 255).round().astype(np.uint8)


def independent_decode(codes: np.ndarray) -> np.ndarray:
    """sRGB codes -> linear, written out from the standard (not through ssran_edge)."""
    from colour.models import eotf_sRGB

    return eotf_sRGB(codes / float(np.iinfo(codes.dtype).max)).astype(np.float32)


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssran_edge.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


# ------------------------------------------------------------------------------------- ICC profiles and PNG chunks

def icc_profile(description: str, primaries: str, linear: bool) -> bytes:
    """A v2 matrix/TRC display profile: the RGB colourspace `primaries` (colour-science's name) adapted to
    D50 (Bradford), with the sRGB tone curve (a 1024-entry table) or a linear one."""
    import colour

    space = colour.RGB_COLOURSPACES[primaries]
    white = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]
    d65, d50 = (colour.xy_to_XYZ(white[k]) for k in ("D65", "D50"))
    to_d50 = colour.adaptation.matrix_chromatic_adaptation_VonKries(d65, d50, "Bradford")
    colorants = to_d50 @ space.matrix_RGB_to_XYZ

    def s15(values) -> bytes:
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    def xyz(values) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(values)

    if linear:
        curve = b"curv" + b"\0" * 4 + struct.pack(">I", 0)  # no entries: the identity
    else:
        table = np.asarray(colour.models.eotf_sRGB(np.linspace(0, 1, 1024))) * 65535
        curve = b"curv" + b"\0" * 4 + struct.pack(">I", 1024) + table.round().astype(">u2").tobytes()
    text = description.encode() + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    tags = [(b"desc", desc), (b"wtpt", xyz(d50)), (b"rXYZ", xyz(colorants[:, 0])), (b"gXYZ", xyz(colorants[:, 1])),
            (b"bXYZ", xyz(colorants[:, 2])), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table_bytes, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table_bytes += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp"
              + b"\0" * 24 + struct.pack(">I", 0) + s15(d50) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table_bytes + data


def png_with_chunk(path: Path, kind: bytes, body: bytes) -> Path:
    """Insert a chunk (gAMA, iCCP...) right after a PNG's IHDR."""
    data = path.read_bytes()
    end = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR data, CRC
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(data[:end] + chunk + data[end:])
    return path


def png16(path: Path, rgb16: np.ndarray) -> Path:
    import cv2

    channels = rgb16[:, :, 2::-1] if rgb16.shape[2] == 3 else rgb16[:, :, [2, 1, 0, 3]]
    assert cv2.imwrite(str(path), np.ascontiguousarray(channels))
    return path


# ------------------------------------------------------------------------------------------------ the decoder

@pytest.mark.parametrize("suffix,options", [(".png", {}), (".bmp", {}), (".tif", {}), (".webp", {"lossless": True}),
                                            (".jpg", {"quality": 95}), (".gif", {})])
def test_every_format_decodes_to_rgb_codes_marked_srgb(tmp_path, suffix, options):
    image = photo()
    path = tmp_path / f"x{suffix}"
    Image.fromarray(image).save(path, **options)
    picture = read_picture(path)
    assert picture.codes.dtype == np.uint8 and picture.codes.shape == image.shape and picture.encoding == "srgb"
    with Image.open(path) as im:
        assert np.array_equal(picture.codes, np.asarray(im.convert("RGB")))  # the file's pixels, as Pillow has them
    if suffix not in (".jpg", ".gif"):  # lossy: JPEG, and GIF's 256-colour palette
        assert np.array_equal(picture.codes, image)


def test_heic_through_pillow_heif(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="the [heic] extra is not installed")
    image = photo(64, 64)
    pillow_heif.from_pillow(Image.fromarray(image)).save(tmp_path / "x.heic", quality=-1)  # -1: lossless
    picture = read_picture(tmp_path / "x.heic")
    assert picture.codes.shape == image.shape and picture.encoding == "srgb"
    assert np.abs(picture.codes.astype(int) - image).mean() < 3  # 4:2:0 even when "lossless"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow_applies_it(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(photo()).save(tmp_path / "x.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "x.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(read_picture(tmp_path / "x.jpg").codes, upright)


def test_sixteen_bit_colour_keeps_16_bits_drops_alpha_and_turns_upright(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 65536, (20, 30, 4), dtype=np.uint16)
    picture = read_picture(png16(tmp_path / "x.png", rgba))
    assert picture.codes.dtype == np.uint16 and np.array_equal(picture.codes, rgba[:, :, :3])
    assert picture.encoding == "srgb"
    exif = Image.Exif()
    exif[0x0112] = 6
    png_with_chunk(tmp_path / "x.png", b"eXIf", exif.tobytes())
    assert np.array_equal(read_picture(tmp_path / "x.png").codes, orient(rgba[:, :, :3], 6))


def test_grey_palette_and_alpha_become_rgb(tmp_path):
    grey = photo()[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(read_picture(tmp_path / "g.png").codes, np.repeat(grey[:, :, None], 3, axis=2))
    Image.fromarray(photo()).convert("P").save(tmp_path / "p.png")
    assert read_picture(tmp_path / "p.png").codes.shape == (24, 32, 3)
    rgba = np.dstack([photo(), np.full((24, 32), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(read_picture(tmp_path / "a.png").codes, photo())


def test_display_p3_profile_is_converted_to_srgb_and_logged(tmp_path, caplog):
    import colour

    codes = photo()
    Image.fromarray(codes).save(tmp_path / "p3.jpg", quality=100, subsampling=0,
                                icc_profile=icc_profile("Display P3", "Display P3", linear=False))
    with caplog.at_level(logging.INFO, logger="ssran_edge"):
        picture = read_picture(tmp_path / "p3.jpg")
    assert "converted its ICC profile (Display P3) to sRGB" in caplog.text
    stored = np.asarray(Image.open(tmp_path / "p3.jpg"))
    # what the colours are in sRGB, from the two colourspaces' definitions
    linear = colour.RGB_to_RGB(colour.models.eotf_sRGB(stored / 255), "Display P3", "sRGB")
    expected = colour.models.eotf_inverse_sRGB(np.clip(linear, 0, 1)) * 255
    assert np.abs(picture.codes - expected).max() <= 3  # littleCMS's 8-bit precision
    assert np.abs(stored.astype(int) - picture.codes).max() >= 10  # a conversion that happened


def test_srgb_profile_is_left_alone(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "s.png", icc_profile=icc_profile("sRGB IEC61966-2.1", "sRGB", False))
    assert np.array_equal(read_picture(tmp_path / "s.png").codes, photo())


def test_the_file_says_linear_png_gama_or_a_linear_icc_curve(tmp_path):
    rgb16 = np.random.default_rng(1).integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    assert read_picture(png16(tmp_path / "plain.png", rgb16)).encoding == "srgb"
    gamma_one = png_with_chunk(png16(tmp_path / "g.png", rgb16), b"gAMA", struct.pack(">I", 100000))
    assert read_picture(gamma_one).encoding == "linear"
    gamma_srgb = png_with_chunk(png16(tmp_path / "s.png", rgb16), b"gAMA", struct.pack(">I", 45455))
    assert read_picture(gamma_srgb).encoding == "srgb"
    profile = b"linear\0\0" + zlib.compress(icc_profile("Linear Rec.709", "sRGB", linear=True))
    assert read_picture(png_with_chunk(png16(tmp_path / "l.png", rgb16), b"iCCP", profile)).encoding == "linear"


def test_multipage_tiff_is_a_linear_band_stack(tmp_path):
    pages = [Image.fromarray(np.full((10, 12), 1000 * (k + 1), np.uint16)) for k in range(5)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    picture = read_picture(tmp_path / "stack.tif")
    assert picture.encoding == "linear" and picture.codes.shape == (10, 12, 5)
    assert picture.codes[0, 0].tolist() == [1000, 2000, 3000, 4000, 5000]


def test_a_tiff_with_geokeys_or_floats_is_a_raster_not_a_photo(tmp_path):
    from ssran_edge.data.images import is_photo_tiff

    Image.fromarray(photo()).save(tmp_path / "photo.tif")
    assert is_photo_tiff(tmp_path / "photo.tif")
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "float.tif")
    assert not is_photo_tiff(tmp_path / "float.tif")
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    with rasterio.open(tmp_path / "geo.tif", "w", driver="GTiff", width=16, height=16, count=3, dtype="uint8",
                       crs="EPSG:32631", transform=Affine(10, 0, 6e5, 0, -10, 5.5e6)) as dst:
        dst.write(np.zeros((3, 16, 16), np.uint8))
    assert not is_photo_tiff(tmp_path / "geo.tif")
    assert read_cube(tmp_path / "geo.tif").encoding == "linear"


def test_tables_are_the_standard_and_decode_codes_and_scaled_values_alike():
    from colour.models import eotf_sRGB

    for bits in (8, 16):
        codes = np.arange(2**bits)
        np.testing.assert_allclose(srgb_table(bits), eotf_sRGB(codes / (2**bits - 1)), rtol=0, atol=1e-7)
        dtype = np.uint8 if bits == 8 else np.uint16
        typed = codes.astype(dtype).reshape(-1, 1, 1)
        scaled = typed.astype(np.float32) / np.float32(2**bits - 1)
        assert np.array_equal(to_linear(typed, "srgb"), to_linear(scaled, "srgb"))  # bit for bit
    with pytest.raises(DataError, match="needs values on a 0-1 scale"):
        to_linear(np.full((2, 2, 3), 1.5, np.float32), "srgb")


def test_refused_in_one_line(tmp_path):
    Image.fromarray(photo()).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(photo()[:1, :1]).save(tmp_path / "dot.png")
    frames = [Image.fromarray(np.roll(photo(), k, axis=1)) for k in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(photo()).save(tmp_path / "broken.png", icc_profile=b"not a profile" * 20)
    for name, phrase in (("cmyk.jpg", "CMYK pixels"), ("dot.png", "1x1 px"), ("anim.gif", "an animated GIF (3 frames)"),
                         ("broken.png", "embedded ICC colour profile is broken")):
        with pytest.raises(DataError) as error:
            read_picture(tmp_path / name)
        assert phrase in str(error.value) and name in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------ through the CLI

def test_png_through_predict_is_the_independently_decoded_npy(tmp_path):
    """Decoding is exact: the PNG's cube and the cube of its linear .npy, decoded without ssran_edge, agree to
    1e-4; with the .npy decoded by our own table they agree bit for bit."""
    codes = photo(96, 128)
    Image.fromarray(codes).save(tmp_path / "x.png")
    np.save(tmp_path / "mine.npy", independent_decode(codes))
    np.save(tmp_path / "table.npy", to_linear(codes, "srgb"))
    for name in ("x.png", "mine.npy", "table.npy"):
        result = cli("predict", str(tmp_path / name), "--model", "cave", "--output", str(tmp_path / f"{name}.out.npy"))
        assert result.returncode == 0, result.stderr
    png, mine, table = (np.load(tmp_path / f"{n}.out.npy") for n in ("x.png", "mine.npy", "table.npy"))
    assert np.abs(png - mine).max() <= 1e-4
    assert np.array_equal(png, table)
    assert "sRGB-encoded: decoded to linear" in cli("predict", str(tmp_path / "x.png"), "--model", "cave",
                                                    "--output", str(tmp_path / "again.npy")).stdout


def test_input_encoding_overrides_the_file(tmp_path):
    codes = photo()
    Image.fromarray(codes).save(tmp_path / "x.png")
    np.save(tmp_path / "codes.npy", codes.astype(np.float32) / np.float32(255))
    outputs = {}
    for name, argv in (("as-linear", ("x.png", "--input-encoding", "linear")), ("npy", ("codes.npy",)),
                       ("npy-as-srgb", ("codes.npy", "--input-encoding", "srgb")), ("png", ("x.png",))):
        out = tmp_path / f"{name}.npy"
        result = cli("predict", str(tmp_path / argv[0]), *argv[1:], "--model", "cave", "--backend", "ort",
                     "--output", str(out))
        assert result.returncode == 0, result.stderr
        outputs[name] = np.load(out)
    assert np.array_equal(outputs["as-linear"], outputs["npy"])  # the codes / 255, undecoded
    assert np.array_equal(outputs["npy-as-srgb"], outputs["png"])  # decoded, wherever the values came from
    assert np.abs(outputs["png"] - outputs["npy"]).max() > 0.01


def test_folder_of_pngs_through_run_is_the_decoded_npys(tmp_path):
    frames, linear = tmp_path / "pngs", tmp_path / "npys"
    frames.mkdir()
    linear.mkdir()
    for k in range(3):
        codes = np.roll(photo(64, 64), 9 * k, axis=1)
        Image.fromarray(codes).save(frames / f"f{k}.png")
        np.save(linear / f"f{k}.npy", independent_decode(codes))
    for folder in (frames, linear):
        (tmp_path / f"{folder.name}_hsi").mkdir()
        result = cli("run", str(folder), "--model", "cave", "--backend", "ort",
                     "--output", str(tmp_path / f"{folder.name}_hsi"))
        assert result.returncode == 0, result.stderr
    for k in range(3):
        png_cube = np.load(sorted((tmp_path / "pngs_hsi").glob("*.npy"))[k])
        npy_cube = np.load(sorted((tmp_path / "npys_hsi").glob("*.npy"))[k])
        assert np.abs(png_cube - npy_cube).max() <= 1e-4


def test_dng_through_predict_is_the_linear_image_it_was_made_from(tmp_path):
    """A DNG written from a known linear image, read back through the CLI, against that image binned the way
    the raw reader bins (one value per colour per Bayer quad) and balanced like the D700's curves."""
    pytest.importorskip("rawpy")
    pytest.importorskip("pidng")
    from tests.test_raw import NIKON, d700_gains, known_image, mosaic_of, quads_of, write_dng

    image = known_image(128, 192)
    write_dng(tmp_path / "d700.dng", mosaic_of(image), NIKON)
    np.save(tmp_path / "known.npy", (quads_of(image) * d700_gains()).astype(np.float32))
    for name in ("d700.dng", "known.npy"):
        result = cli("predict", str(tmp_path / name), "--model", "cave", "--backend", "ort",
                     "--output", str(tmp_path / f"{name}.out.npy"))
        assert result.returncode == 0, result.stderr
        assert "camera mismatch" not in result.stderr
    raw, known = np.load(tmp_path / "d700.dng.out.npy"), np.load(tmp_path / "known.npy.out.npy")
    assert raw.shape == (64, 96, 31)
    assert np.abs(raw - known).max() <= 2e-3  # 14-bit quantisation, through the network


def test_a_raw_from_another_camera_warns_once(tmp_path):
    pytest.importorskip("rawpy")
    pytest.importorskip("pidng")
    from tests.test_raw import ACME, MATRIX, known_image, mosaic_of, write_dng

    dng = write_dng(tmp_path / "acme.dng", mosaic_of(known_image()), ACME, matrix=MATRIX)
    result = cli("predict", str(dng), "--model", "cave", "--backend", "ort", "--output", str(tmp_path / "y.npy"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "camera mismatch" in line]
    assert len(warnings) == 1 and "ACME X1" in warnings[0] and "nikon_d700" in warnings[0]


def test_valid_photos_that_look_odd_work_through_predict(tmp_path):
    """Not bad input: a 16-bit PNG with alpha, and a JPEG stored sideways with EXIF orientation 6 (a phone
    held upright) -- which comes out upright: its cube is as tall as the photo is shown."""
    rgba = np.random.default_rng(2).integers(0, 65536, (20, 30, 4), dtype=np.uint16)
    png16(tmp_path / "alpha16.png", rgba)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo(24, 40)).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    for name, shape in (("alpha16.png", (20, 30, 31)), ("sideways.jpg", (40, 24, 31))):
        result = cli("predict", str(tmp_path / name), "--model", "cave", "--backend", "ort",
                     "--output", str(tmp_path / f"{name}.npy"))
        assert result.returncode == 0, result.stderr
        assert np.load(tmp_path / f"{name}.npy").shape == shape
    np.save(tmp_path / "alpha16_linear.npy", to_linear(rgba[:, :, :3], "srgb"))  # 16-bit codes, decoded by table
    result = cli("predict", str(tmp_path / "alpha16_linear.npy"), "--model", "cave", "--backend", "ort",
                 "--output", str(tmp_path / "linear.npy"))
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.load(tmp_path / "alpha16.png.npy"), np.load(tmp_path / "linear.npy"))


def test_with_no_model_named_a_photo_gets_the_srgb_model_and_linear_values_get_cave(tmp_path):
    """--model left out: an sRGB-encoded photo (or a folder of them, through `run`) picks `srgb`, linear
    values pick `cave`; fed to the other model, each warns once."""
    Image.fromarray(photo(32, 48)).save(tmp_path / "shot.jpg", quality=90)
    np.save(tmp_path / "linear.npy", to_linear(photo(32, 48), "srgb"))
    chosen = {}
    for name in ("shot.jpg", "linear.npy"):
        result = cli("predict", str(tmp_path / name), "--backend", "ort", "--output", str(tmp_path / f"{name}.npy"))
        assert result.returncode == 0, result.stderr
        chosen[name] = next(line for line in result.stdout.splitlines() if line.startswith("model: "))
    assert "srgb.safetensors (cave_srgb" in chosen["shot.jpg"] and "cave.safetensors (cave," in chosen["linear.npy"]
    (tmp_path / "frames").mkdir()
    Image.fromarray(photo(32, 48)).save(tmp_path / "frames" / "0.png")
    result = cli("run", str(tmp_path / "frames"), "--backend", "ort", "--output", str(tmp_path / "out"),
                 "--summary-json", str(tmp_path / "summary.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["model"].endswith("srgb.safetensors")
    warned = cli("predict", str(tmp_path / "linear.npy"), "--model", "srgb", "--backend", "ort",
                 "--output", str(tmp_path / "w.npy"))
    lines = [line for line in warned.stderr.splitlines() if "trained on sRGB photos" in line]
    assert warned.returncode == 0 and len(lines) == 1 and "--model cave" in lines[0]
