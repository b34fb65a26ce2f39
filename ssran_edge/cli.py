"""The `ssran-edge` command.

  ssran-edge predict                  bundled CAVE crop -> simulated RGB -> bundled model -> 31-band cube
  ssran-edge predict CUBE --srf S     any hyperspectral cube through an SRF (metrics against the cube)
  ssran-edge predict MSI.npy          a real multispectral image (bands = the model's input bands)
  ssran-edge train ...                the same as `python -m train ...`
  ssran-edge export --fp16 ...        the same as `python -m export ...`
  ssran-edge run camera_stream        stream frames through the model (see ssran-edge run --help)
  ssran-edge bench [--smoke]          latency x accuracy of every backend and precision (benchmarks/report.py)
  ssran-edge evaluate --model M       test-split report for a model on its protocol, beside the simple
                                      baselines (linear, root-polynomial 2 and 3) fitted on its training data
  ssran-edge info [MODEL]             the model card
Expected bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ssran_edge.arguments import OneLineParser, positive_int
from ssran_edge.errors import DataError, SSRANEdgeError


def _load(model_path: str | None):
    from ssran_edge.assets import DEFAULT_MODEL, MODELS
    from ssran_edge.checkpoint import load_model

    path = MODELS.get(model_path, model_path) if model_path else DEFAULT_MODEL
    return (path, *load_model(path))


def cmd_predict(args) -> int:
    import numpy as np

    from ssran_edge.assets import demo_scene
    from ssran_edge.data.readers import check_cube, read_cube
    from ssran_edge.metrics import quality_assessment
    from ssran_edge.srf import load_srf, simulate_msi
    from ssran_edge.tiling import predict

    path, model, card = _load(args.model)
    cube = read_cube(args.input, args.variable) if args.input else demo_scene()
    reference = None
    if cube.bands != model.in_bands:
        srf_name = args.srf or (card["srf"] if not args.input else None)
        if not srf_name:
            raise DataError(f"{cube.source}: {cube.bands} bands, but the model takes {model.in_bands}; "
                            f"pass --srf to simulate an MSI from a hyperspectral cube")
        wavelengths = cube.wavelengths if cube.wavelengths is not None else card.get("wavelengths_nm")
        matrix = load_srf(srf_name).matrix_for(np.asarray(wavelengths) if wavelengths is not None else None, cube.bands)
        if matrix.shape[0] != model.in_bands:
            raise DataError(f"SRF {srf_name} gives {matrix.shape[0]} bands; the model takes {model.in_bands}")
        msi = simulate_msi(cube.data, matrix)
        if cube.bands == model.out_bands:
            reference = cube.data
    else:
        msi = check_cube(cube.data, cube.source, model.in_bands)
    mode = args.mode or card["inference"]["mode"]
    started = time.perf_counter()
    hsi = predict(model, msi, mode, tile=args.tile or card["inference"]["tile"], device=args.device)
    seconds = time.perf_counter() - started
    from ssran_edge.io import write_cube

    name = Path(cube.source.split(":")[0]).stem
    output = Path(args.output or f"ssran_output/{name}_hsi.npy")
    written = write_cube(output, hsi, card.get("wavelengths_nm"))
    h, w = msi.shape[:2]
    print(f"model: {path} ({card['protocol']}, {model.in_bands} -> {model.out_bands} bands, {mode} inference)")
    print(f"input: {cube.source} ({h}x{w}x{cube.bands}); {seconds:.2f} s, {h * w / seconds / 1e6:.3f} Mpx/s")
    print(f"output: {written} ({h}x{w}x{model.out_bands} float32)")
    if reference is not None:
        m = quality_assessment(reference, hsi)
        print("quality vs ground truth: " + ", ".join(f"{k.upper()} {v:.4g}" for k, v in m.items()))
    return 0


def cmd_info(args) -> int:
    path, model, card = _load(args.model)
    from ssran_edge.model import count_parameters

    print(json.dumps({"path": str(path), "parameters": count_parameters(model),
                      **{k: v for k, v in card.items() if k != "training"}}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from ssran_edge.data.protocols import protocol_of_card
    from ssran_edge.train.report import MD_HEADER, evaluate, markdown_rows, per_scene_table, robustness_table, verdict

    path, _, card = _load(args.model)
    report = evaluate(path, protocol_of_card(card, args.data_root, args.protocol), args.device,
                      robustness=args.robustness)
    print("\n".join([*MD_HEADER, *markdown_rows(report), "", *per_scene_table(report), "",
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
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="reconstruct a hyperspectral cube")
    p.add_argument("input", nargs="?", help="cube or MSI file/folder (default: the bundled demo scene)")
    p.add_argument("--model", help="weights (.safetensors + .json card) or bundled: cave, cave_ssran, paris, pavia")
    p.add_argument("--srf", help="SRF to simulate the MSI from a hyperspectral input (bundled name or file)")
    p.add_argument("--variable", help="variable name inside a .mat/.npz")
    p.add_argument("--mode", choices=["tile", "patch"], help="inference mode (default: the model card's)")
    p.add_argument("--tile", type=positive_int, help="tile size in pixels (tile mode)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", help=".npy or .hdr (ENVI); default ssran_output/<input>_hsi.npy")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("run", help="stream frames (camera, video, folder, large scene, replay) through the model",
                       description=_run_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    from ssran_edge.runtime.run import add_arguments, run_command

    add_arguments(p)
    p.set_defaults(func=run_command)
    p = sub.add_parser("info", help="print a model card")
    p.add_argument("model", nargs="?")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("evaluate", help="test-split metrics of a model (needs the data sets)")
    p.add_argument("--model")
    p.add_argument("--protocol", choices=["paris", "pavia", "cave", "cave7"],
                   help="the test split to use (default: the one the model card names)")
    p.add_argument("--robustness", action=argparse.BooleanOptionalAction, default=True,
                   help="also exposure x0.5/x2 and MSI noise (sigma 0.005, 0.01)")
    p.add_argument("--data-root")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)
    sub.add_parser("train", help="train a model (see python -m train --help)", add_help=False)
    sub.add_parser("export", help="ONNX / FP16 / INT8 / TensorRT export (see python -m export --help)",
                   add_help=False)
    sub.add_parser("bench", help="latency and accuracy of every artefact (see ssran-edge bench --help)",
                   add_help=False)
    return parser


VERBOSE = ("-v", "--verbose")


def configure_logging(verbose: bool) -> None:
    """Our messages at INFO. Third-party warnings (Python warnings, the exporters' chatter, ONNX
    Runtime's session log) only with -v: at default verbosity stderr holds our lines alone."""
    import warnings

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("ssran_edge").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        warnings.simplefilter("ignore")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = any(a in VERBOSE for a in argv)
    argv = [a for a in argv if a not in VERBOSE]
    configure_logging(verbose)
    if argv[:1] == ["train"]:
        from ssran_edge.train.__main__ import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["export"]:
        from ssran_edge.export.__main__ import main as export_main

        return export_main(argv[1:])
    if argv[:1] == ["bench"]:
        from ssran_edge.bench.report import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SSRANEdgeError as exc:
        print(f"ssran-edge: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # an input too large for this machine, past the readers' own size checks
        print(f"ssran-edge: error: not enough memory for this input ({' '.join(str(exc).split())}); "
              "a large scene runs in windows: ssran-edge run SCENE --window 1024", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssran-edge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ssran-edge info | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
