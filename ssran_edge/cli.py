"""The `ssran-edge` command.

  ssran-edge predict                  bundled CAVE crop -> simulated RGB -> bundled model -> 31-band cube
  ssran-edge predict CUBE --srf S     any hyperspectral cube through an SRF (metrics against the cube)
  ssran-edge predict MSI.npy          a real multispectral image (bands = the model's input bands)
  ssran-edge train ...                the same as `python -m train ...`
  ssran-edge export --fp16 ...        the same as `python -m export ...`
  ssran-edge run camera_stream        stream frames through the model (see ssran-edge run --help)
  ssran-edge batch 'scenes/*.tif' --output hsi/
                                      an archive of scenes on a Dask cluster, one task per scene
                                      (the [distributed] extra)
  ssran-edge bench [--smoke]          latency x accuracy of every backend and precision (benchmarks/report.py)
  ssran-edge evaluate --model M       test-split report for a model on its protocol, beside the simple
                                      baselines (linear, root-polynomial 2-4) fitted on its training data
  ssran-edge info [MODEL] [--json]    the model card in short: bands, camera, test metrics, artefacts
Expected bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from importlib import import_module
from pathlib import Path

from ssran_edge.arguments import (
    BACKEND_HELP,
    MIN_TILE,
    OneLineParser,
    add_encoding_argument,
    add_raster_arguments,
    backend_choices,
    invoked_as,
    is_geotiff_output,
    protocol_choices,
    raster_options,
    tile_size,
    worker_resources,
)
from ssran_edge.console import configure_logging
from ssran_edge.data.cube import RASTER_SUFFIXES
from ssran_edge.errors import DataError, MissingExtra, SSRANEdgeError, one_line, shown_path
from ssran_edge.extras import require
from ssran_edge.geo import OUTPUT_SUFFIXES


def export_once(weights: Path) -> Path:
    """An ONNX for weights that ship without one: exported once and cached, when the [export] extra is
    installed. The runtime gets this function from here: it never imports export itself."""
    try:
        from ssran_edge.export.onnx_export import cached_onnx
    except ImportError:
        raise SSRANEdgeError(f"{shown_path(weights.name)}: no ONNX beside these weights, and exporting one needs "
                             "the [export] extra: pip install 'ssran-edge[export]' (or pass an .onnx with --model)"
                             ) from None
    return cached_onnx(weights)


def cmd_predict(args) -> int:
    """One frame through `run`'s stream: the input (or the bundled demo scene, simulated through the card's
    SRF) as a one-frame source, the same checks, tiling and sinks, and its metrics printed after."""
    import numpy as np

    from ssran_edge.assets import demo_scene
    from ssran_edge.data.cube import Cube
    from ssran_edge.data.readers import check_cube, read_cube
    from ssran_edge.encoding import resolve
    from ssran_edge.geo import GeoTiffOptions
    from ssran_edge.metrics import quality_assessment
    from ssran_edge.runtime.backends import select_runner
    from ssran_edge.runtime.pipeline import default_batch, open_stream
    from ssran_edge.runtime.sinks import MemorySink, TeeSink, card_tags, open_sink
    from ssran_edge.runtime.sources import CubeSource
    from ssran_edge.srf import load_srf, simulate_msi

    output = _predict_output(args)
    # The input first: a bad file is then the only line, before any model is opened (or exported)
    cube = read_cube(args.input, args.variable, raster_options(args)) if args.input else demo_scene()
    # --model left out: the model for the input's encoding (an sRGB photo -> srgb, linear values -> cave)
    from ssran_edge.assets import model_for

    encoding = resolve(args.input_encoding, cube.encoding)
    selection = select_runner(model_for(args.model, encoding), args.backend, args.device, onnx_for=export_once)
    card = selection.card
    with selection.runner as runner:
        in_bands, out_bands = runner.in_bands, runner.out_bands
        reference, camera = None, None
        if cube.bands != in_bands:
            srf_name = args.srf or (card.srf if card and not args.input else None)
            if not srf_name:
                raise DataError(f"{cube.source}: {cube.bands} bands, but the model takes {in_bands}; "
                                + ("choose them with --bands (indices or names), or " if cube.geo else "")
                                + "pass --srf to simulate an MSI from a hyperspectral cube")
            wavelengths = cube.wavelengths if cube.wavelengths is not None else selection.wavelengths
            srf = load_srf(srf_name)
            matrix = srf.matrix_for(np.asarray(wavelengths) if wavelengths is not None else None, cube.bands)
            if matrix.shape[0] != in_bands:
                raise DataError(f"SRF {srf_name} gives {matrix.shape[0]} bands; the model takes {in_bands}")
            msi, camera = simulate_msi(cube.data, matrix), srf.name
            if cube.bands == out_bands:
                reference = cube.data
        else:
            msi = check_cube(cube.data, cube.source, in_bands)
        source = CubeSource(Cube(msi, None if camera else cube.wavelengths, cube.source, cube.geo, cube.valid,
                                 cube.encoding, camera or cube.camera), reference=reference)
        output = output or Path(f"ssran_output/{Path(cube.source.split(':')[0]).stem}_hsi.npy")
        geotiff_output = output.suffix.lower() in OUTPUT_SUFFIXES
        if not geotiff_output and output.suffix.lower() not in (".npy", ".hdr", ".img"):
            raise DataError(f"{output}: unknown output format {output.suffix!r} (use .npy or .hdr)")
        geotiff = GeoTiffOptions(args.dtype, args.cog, args.compress, card_tags(selection)) if geotiff_output else None
        file_sink, kept = open_sink(output, single_frame=True, geotiff=geotiff), MemorySink()
        mode = args.mode or (card.inference.mode if card else "tile")
        file_sink.lock()
        try:
            sink = TeeSink(file_sink, kept)
            pipeline = open_stream(source, runner, sink, selection.wavelengths, camera=card.srf if card else None,
                                   encoding=args.input_encoding, tile=args.tile or selection.tile,
                                   batch=default_batch(runner), queue_size=1,
                                   patch=(card.inference.patch if card else 4) if mode == "patch" else 0)
            try:
                stats = pipeline.run()
            finally:
                sink.close()
        finally:
            file_sink.unlock()
    hsi, written, valid = kept.cubes[0], file_sink.last_written, cube.valid
    seconds = stats.stage_seconds["infer"].total + stats.stage_seconds["postprocess"].total
    h, w = msi.shape[:2]
    about = card.protocol if card and card.protocol else "no ssran-edge card"
    print(f"model: {selection.model} ({about}, "
          f"{in_bands} -> {out_bands} bands, {mode} inference, {selection.backend})")
    decoded = ", sRGB-encoded: decoded to linear" if resolve(args.input_encoding, cube.encoding) == "srgb" else ""
    print(f"input: {cube.source} ({h}x{w}x{cube.bands}{decoded}); {seconds:.2f} s, {h * w / seconds / 1e6:.3f} Mpx/s")
    dtype = args.dtype if geotiff_output else "float32"
    print(f"output: {written} ({h}x{w}x{out_bands} {dtype})")
    if cube.geo is not None and not cube.geo.georeferenced:
        print(f"note: {cube.source} has no georeferencing (no CRS or geotransform); neither has the output")
    if valid is not None:
        print(f"nodata: {int((~valid).sum())} of {h * w} pixels masked in, NaN out, left out of any metric")
    if reference is not None:
        if valid is not None:  # per-pixel indices over the valid pixels only
            m = quality_assessment(reference[valid][None], hsi[valid][None], full=False)
        else:
            m = quality_assessment(reference, hsi)
        print("quality vs ground truth: " + ", ".join(f"{k.upper()} {v:.4g}" for k, v in m.items()))
    return 0


def _predict_output(args) -> Path | None:
    """The output path, refused up front if it cannot be written or the flags do not fit its form."""
    from ssran_edge.atomic import check_writable

    output = Path(args.output) if args.output else None
    if is_geotiff_output(output, args):
        require("geo", "ssran-edge predict --output x.tif")
    if raster_options(args) is not None:
        if not args.input or Path(args.input).suffix.lower() not in RASTER_SUFFIXES:
            raise DataError("--bands, --scale and --offset apply to a GeoTIFF/JP2/VRT input")
    return check_writable(output, "--output") if output is not None else None


def cmd_batch(args) -> int:
    from ssran_edge.runtime.batch import expand_sources, run_batch

    require("distributed", "ssran-edge batch")
    if args.workers < 1:
        raise DataError(f"--workers {args.workers}: must be >= 1")
    scenes = expand_sources(args.sources)
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--output {shown_path(folder)}: exists and is not a folder")
    records = run_batch(scenes, folder, model=args.model or "", backend=args.backend, tile=args.tile,
                        scheduler=args.scheduler, workers=args.workers, memory_limit=args.memory_limit,
                        resources=args.resources)
    failed = [r for r in records if r.status != "done"]
    done = len(records) - len(failed)
    print(f"batch: {done} scenes written, {len(failed)} failed; manifest {folder / 'manifest.jsonl'}")
    if failed:
        names = "; ".join(r.error or r.source for r in failed[:3])  # each error names its scene
        raise DataError(f"{len(failed)} of {len(records)} scenes failed ({names}"
                        f"{'; ...' if len(failed) > 3 else ''})")
    return 0


def cmd_info(args) -> int:
    from ssran_edge.assets import model_path
    from ssran_edge.card import ModelCard

    path = model_path(args.model)
    card = ModelCard.read(path)
    if args.json:  # the whole card, as scripts have read it
        print(json.dumps({"path": str(path), "weights": _stored_values(path),
                          **{k: v for k, v in card.to_dict().items() if k != "training"}}, indent=2))
        return 0
    print("\n".join(_card_summary(path, card)))
    return 0


def _card_summary(path: Path, card) -> list[str]:
    """A model card in a dozen lines: what the model is, what it reads and writes, how well it did on its
    test split (beside the card's baselines), and which artefacts stand beside the weights."""
    from ssran_edge.assets import MODELS

    name = next((k for k, v in MODELS.items() if Path(v) == path), path.stem)
    stored = _stored_values(path)
    sizes = [f"{label} {value}" for label, value in (("width", card.width), ("blocks", card.num_blocks),
                                                     ("ECA kernel", card.eca_kernel)) if value is not None]
    lines = [f"model:      {name} ({shown_path(path)}; ssran-edge {card.version})",
             f"arch:       {card.arch}" + (f" ({', '.join(sizes)})" if sizes else "")
             + (f"; {stored:,} stored values" if stored is not None else ""),
             f"protocol:   {card.protocol or 'not recorded'}; camera/SRF: {card.srf or 'not recorded'}"
             + ("; input: sRGB-encoded photos and video (8-bit, JPEG), decoded to linear" if card.encoding == "srgb"
                else ""),
             f"bands:      {card.in_bands} in" + (f" ({', '.join(map(str, card.msi_band_names))})"
                                                  if card.msi_band_names else "")
             + f" -> {card.out_bands} out" + _wavelength_range(card.wavelengths_nm)]
    inference = card.inference
    lines.append(f"inference:  {inference.mode} mode, " + (f"{inference.tile} px tiles" if inference.mode == "tile"
                                                          else f"{inference.patch} px patches")
                 + (f"; chosen at epoch {card.best_epoch}" if card.best_epoch is not None else "")
                 + (f", validation PSNR {card.val_psnr:.2f} dB" if isinstance(card.val_psnr, (int, float)) else ""))
    lines += _metrics_table(card.test_metrics)
    lines += ["artefacts:", *(f"  {line}" for line in _artefacts(path, name))]
    lines.append("(the whole card: ssran-edge info " + (name if name in MODELS else shown_path(path)) + " --json)")
    return lines


def _wavelength_range(wavelengths) -> str:
    """', 31 bands at 400-700 nm every 10 nm' style: the range, and the step where it is even."""
    if not wavelengths:
        return " (no wavelengths recorded)"
    w = [float(v) for v in wavelengths]
    text = f", {min(w):g}\u2013{max(w):g} nm"
    steps = [b - a for a, b in zip(w, w[1:], strict=False)]
    if steps and max(steps) - min(steps) < 1e-6 * max(1.0, abs(steps[0])):
        text += f" every {steps[0]:g} nm"
    return text


def _metrics_table(metrics) -> list[str]:
    """The card's test metrics as a table, one row per method (the model's inference modes, then the
    baselines the card holds); a flat {metric: value} record is one row."""
    if not metrics or not isinstance(metrics, dict):
        return ["test split: no metrics in the card"]
    rows = metrics if all(isinstance(v, dict) for v in metrics.values()) else {"model": metrics}
    names = list(dict.fromkeys(k for row in rows.values() for k, v in row.items() if isinstance(v, (int, float))))
    width = max(len("test split"), *(len(str(k)) for k in rows))
    lines = [f"{'test split':<{width}}" + "".join(f" {n.upper():>7}" for n in names)]
    for method, row in rows.items():
        cells = [f" {_figure(row.get(n)):>7}" for n in names]
        lines.append(f"{method:<{width}}" + "".join(cells))
    baselines = [str(k) for k in rows if not str(k).startswith(("ssran", "model"))]
    if baselines:
        lines.append(f"  ({', '.join(baselines)}: least-squares baseline{'s' if len(baselines) > 1 else ''} "
                     "fitted on the same training data)")
    return lines


def _figure(value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"


def _artefacts(weights: Path, name: str) -> list[str]:
    """What stands beside the weights: the ONNX the runtime uses without torch (and whether it was exported
    from exactly these weights), an ONNX cached from them, and the export folder python -m export writes."""
    from ssran_edge.atomic import sha256_file
    from ssran_edge.io import cached_onnx_path
    from ssran_edge.records import MANIFEST, Manifest

    lines = []
    onnx_path = weights.with_suffix(".onnx")
    if onnx_path.is_file():
        from ssran_edge.runtime.backends import exported_from

        try:
            ours = exported_from(onnx_path, weights)
        except SSRANEdgeError as exc:
            lines.append(f"{shown_path(onnx_path.name)}: unreadable ({one_line(exc)})")
        else:
            lines.append(f"{shown_path(onnx_path.name)}: exported from these weights (weights hash matches): runs "
                         "without torch" if ours else
                         f"{shown_path(onnx_path.name)}: NOT exported from these weights (weights hash differs): "
                         "the runtime ignores it")
    else:
        cached = cached_onnx_path(weights) if weights.is_file() else None
        lines.append(f"no {shown_path(onnx_path.name)} beside the weights: "
                     + (f"the runtime uses the ONNX cached from them ({shown_path(cached)})"
                        if cached and cached.is_file()
                        else "the runtime exports one once (the [export] extra) or runs --backend torch"))
    manifest_path = Path("exports") / weights.stem / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = Manifest.read(manifest_path)
        except SSRANEdgeError as exc:
            lines.append(f"{shown_path(manifest_path)}: unreadable ({one_line(exc)})")
        else:
            files = [f"{a.file} ({a.precision})" for a in manifest.artefacts]
            source = ("from these weights" if weights.is_file() and manifest.source_sha256 == sha256_file(weights)
                      else "from OTHER weights (hash differs)")
            lines.append(f"{shown_path(manifest_path.parent)}/: {', '.join(files) or 'no artefact passed'}; {source}")
    else:
        lines.append(f"no {shown_path(manifest_path.parent)}/ here (python -m export --weights {name} writes it)")
    return lines


def _stored_values(weights: Path) -> int | None:
    """Values stored in a safetensors file (parameters and buffers such as a frozen skip), from its header
    (8-byte length, then JSON of shapes): no torch needed."""
    if weights.suffix != ".safetensors" or not weights.is_file():
        return None
    try:
        with open(weights, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (ValueError, KeyError, TypeError, OSError, MemoryError):
        raise DataError(f"{weights}: unreadable safetensors header") from None


def cmd_evaluate(args) -> int:
    from ssran_edge.assets import model_path
    from ssran_edge.card import ModelCard
    from ssran_edge.data.protocols import protocol_of_card
    from ssran_edge.train.report import (
        MD_HEADER,
        condition_scene_tables,
        conditions_table,
        evaluate,
        markdown_rows,
        per_scene_table,
        robustness_table,
        verdict,
    )

    path = model_path(args.model)
    card = ModelCard.read(path)
    report = evaluate(path, protocol_of_card(card, args.data_root, args.protocol), args.device,
                      robustness=args.robustness)
    print("\n".join([*MD_HEADER, *markdown_rows(report), "", *per_scene_table(report), "",
                      *conditions_table(report), "", *condition_scene_tables(report),
                      *robustness_table(report), "", verdict(report)]).replace("\n\n\n", "\n\n"))
    return 0


def _run_doc() -> str:
    from ssran_edge.runtime import run

    return run.__doc__ or ""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ssran-edge", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    from ssran_edge import __version__

    parser.add_argument("--version", action="version", version=f"ssran-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug messages and third-party warnings (anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (ssran-edge COMMAND --help for each one's options)")
    p = sub.add_parser("predict", help="reconstruct a hyperspectral cube")
    p.add_argument("input", nargs="?", help="a photo (.jpg .png .webp .bmp .tif .heic), a camera raw file (.dng .nef "
                                            "...), a cube or MSI file/folder (default: the bundled demo scene)")
    p.add_argument("--model", help="weights (.safetensors + .json card), .onnx, .engine, or bundled: cave, "
                                   "cave_ssran, srgb, paris, pavia (default: srgb for an sRGB-encoded photo, "
                                   "cave for linear values)")
    p.add_argument("--srf", help="SRF to simulate the MSI from a hyperspectral input (bundled name or file)")
    p.add_argument("--variable", help="variable name inside a .mat/.npz")
    p.add_argument("--mode", choices=["tile", "patch"], help="inference mode (default: the model card's)")
    p.add_argument("--tile", type=tile_size, help=f"tile size in pixels, >= {MIN_TILE} (tile mode; 0: the model's)")
    p.add_argument("--backend", default="auto", choices=backend_choices(), help=BACKEND_HELP)
    p.add_argument("--device", default="", help="cpu or cuda[:N]; with --backend openvino: CPU, GPU[.N], NPU or AUTO "
                   "(default: the best available)")
    p.add_argument("--output", help=".npy, .hdr (ENVI) or .tif (GeoTIFF, [geo] extra); default "
                                    "ssran_output/<input>_hsi.npy")
    add_encoding_argument(p)
    add_raster_arguments(p)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("run", help="stream frames (camera, video, folder, large scene, replay) through the model",
                       description=_run_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    from ssran_edge.runtime.run import add_arguments, run_command

    add_arguments(p)
    p.set_defaults(func=lambda args: run_command(args, onnx_for=export_once))
    p = sub.add_parser("batch", help="an archive of scenes on a Dask cluster, one task per scene ([distributed])")
    p.add_argument("sources", nargs="+", help="scene files or globs (npy, ENVI, mat, GeoTIFF/JP2...)")
    p.add_argument("--output", required=True, help="folder for <scene>_hsi.npy/.tif and manifest.jsonl")
    p.add_argument("--model", help="weights, ONNX or engine (default: the bundled cave model)")
    p.add_argument("--backend", default="auto", choices=backend_choices(), help=BACKEND_HELP)
    p.add_argument("--tile", type=tile_size, default=0, help=f"tile size, >= {MIN_TILE} (default: the model's)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (one thread each)")
    p.add_argument("--memory-limit", default="4GiB", help="LocalCluster memory limit per worker")
    p.add_argument("--resources", type=worker_resources, default={},
                   help="what each scene holds on its worker, e.g. GPU=1: one scene at a time per worker started "
                        "with `dask worker ... --resources GPU=1` (a LocalCluster's workers get one each)")
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser("info", help="a model card in short: bands, camera, test metrics, artefacts beside it")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="bundled name (cave (default), cave_ssran, srgb, paris, pavia) or weights file (.safetensors "
                        "with its .json card)")
    p.add_argument("--json", action="store_true",
                   help="the whole card as JSON (path, stored values and every card field but the training "
                        "settings), for scripts")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("evaluate", help="test-split metrics of a model (needs the data sets)")
    p.add_argument("--model", help="bundled name or weights file (default: the bundled cave model)")
    p.add_argument("--protocol", choices=protocol_choices(),
                   help="the test split to use (default: the one the model card names)")
    p.add_argument("--robustness", action=argparse.BooleanOptionalAction, default=True,
                   help="also each capture condition (read noise sigma 0.5 %%, 1 %%, read + shot; every baseline "
                        "refitted on training pixels under it) and exposure x0.5/x2")
    p.add_argument("--data-root", help="folder holding the data sets (default $SSRAN_DATA or ../shared/data)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_evaluate)
    sub.add_parser("train", help="train a model (see ssran-edge train --help)", add_help=False)
    sub.add_parser("export", help="ONNX / FP16 / INT8 / TensorRT export (see ssran-edge export --help)",
                   add_help=False)
    sub.add_parser("bench", help="latency and accuracy of every artefact (see ssran-edge bench --help)",
                   add_help=False)
    return parser


VERBOSE = ("-v", "--verbose")
STAGES = {"train": ("train", "ssran_edge.train.__main__"), "export": ("export", "ssran_edge.export.__main__"),
          "bench": ("bench", "ssran_edge.bench.report")}  # command -> (pip extra, module with main(argv))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = any(a in VERBOSE for a in argv)
    argv = [a for a in argv if a not in VERBOSE]
    configure_logging(verbose)
    try:
        stage = STAGES.get(argv[0]) if argv else None
        if stage is not None:  # train, export, bench parse their own arguments
            extra, module = stage
            require(extra, f"ssran-edge {argv[0]}")
            with invoked_as(f"ssran-edge {argv[0]}"):  # its usage line and errors name this command
                return import_module(module).main(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "evaluate":
            require("train", "ssran-edge evaluate")
        return args.func(args)
    except MissingExtra as exc:  # "ssran-edge predict --output x.tif: needs the [geo] extra": the line names us
        message = one_line(exc)
        print(message if message.startswith("ssran-edge") else f"ssran-edge: error: {message}", file=sys.stderr)
        return 2
    except SSRANEdgeError as exc:
        print(f"ssran-edge: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # an input too large for this machine, past the readers' own size checks
        print(f"ssran-edge: error: not enough memory for this input ({one_line(exc)}); "
              "a large scene runs in windows: ssran-edge run SCENE --window 1024", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssran-edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ssran-edge info | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # after BrokenPipeError, one of its kind
        if exc.errno != errno.ENAMETOOLONG:
            raise
        name = Path(exc.filename or "").name
        print(f"ssran-edge: error: file name too long ({len(name)} characters; this file system allows "
              f"{os.pathconf('/', 'PC_NAME_MAX')}): {shown_path(name[:40])}...", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
