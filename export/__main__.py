"""`python -m export` (also `ssran-edge export`): SSRAN -> ONNX (fp32, ORT-optimised CPU graph), FP16,
INT8 QDQ calibrated on the protocol's real training data, TensorRT engines where TensorRT and a GPU
are present. Every artefact is gated on accuracy drift against the fp32 PyTorch model.

  python -m export --fp16                 bundled CAVE model -> exports/cave/
  python -m export --int8 --calib-method entropy --weights runs/paris-edge-ssran/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssran_edge.arguments import (
    MIN_TILE,
    OneLineParser,
    auto_or_count,
    non_negative_int,
    positive_int,
    prog_for,
    protocol_choices,
    tile_pixels,
    tile_size,
)
from ssran_edge.console import configure_logging
from ssran_edge.data.patches import DEFAULT_CALIBRATION, QAT_CALIBRATION
from ssran_edge.errors import DriftGateError, MissingExtra, SSRANEdgeError, one_line
from ssran_edge.export.drift import DEFAULT_MAX_DROP_DB
from ssran_edge.extras import require


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog_for("python -m export"), description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", "--model", dest="weights",
                   help="checkpoint (.safetensors + .json card) or bundled: cave (default), cave_ssran, srgb, paris, "
                        "pavia")
    p.add_argument("--output", help="output folder (default exports/<model name>)")
    p.add_argument("--fp16", "--half", dest="fp16", action="store_true", help="FP16 ONNX (+ FP16 engine with TensorRT)")
    p.add_argument("--fp16-io", action="store_true", help="fp16 input/output tensors in the FP16 ONNX")
    p.add_argument("--int8", action="store_true", help="INT8 QDQ ONNX calibrated on real data (+ INT8 engine)")
    p.add_argument("--engine", action="store_true", help="require TensorRT engines (fail if TensorRT is missing)")
    p.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=True,
                   help="dynamic batch/height/width in the ONNX (default: on)")
    p.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                   help="onnxslim the graph (default: on)")
    p.add_argument("--imgsz", "--tile", dest="imgsz", type=tile_size, default=0,
                   help=f"tile size the runtime feeds, >= {MIN_TILE} (default: the model card's)")
    p.add_argument("--batch", type=positive_int, default=4,
                   help="tiles per batch (TensorRT profile maximum; default %(default)s)")
    p.add_argument("--data", help="protocol whose training data calibrates INT8 and whose validation split "
                                  f"gates drift: {', '.join(protocol_choices())} (default: the model's)")
    p.add_argument("--data-root", help="folder holding the data sets (default $SSRAN_DATA or ../shared/data)")
    calib = (f"{DEFAULT_CALIBRATION.method} on {DEFAULT_CALIBRATION.samples} tiles of {DEFAULT_CALIBRATION.tile} px; "
             f"a --qat model: {QAT_CALIBRATION.method} on {QAT_CALIBRATION.samples}, as it was fine-tuned")
    p.add_argument("--calib-samples", type=positive_int, default=0, help=f"calibration tiles (default: {calib})")
    p.add_argument("--calib-method", choices=["minmax", "entropy", "percentile"], default="",
                   help=f"how ONNX Runtime sets activation ranges (default: {calib})")
    p.add_argument("--calib-tile", type=tile_pixels, default=0,
                   help=f"calibration tile size, >= {MIN_TILE} (default: {calib})")
    p.add_argument("--float-blocks", type=auto_or_count, default=None, metavar="N|auto",
                   help="residual blocks, counted from the output, that stay float in the INT8 model "
                        "(default auto: the fewest, from 0 up, whose drift passes --max-drop-int8)")
    p.add_argument("--workspace", type=float, default=4.0, help="TensorRT builder workspace, GiB (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda:N, or dla:N (Jetson DLA core) for TensorRT")
    p.add_argument("--max-drop-fp16", type=float, default=DEFAULT_MAX_DROP_DB["fp16"],
                   help="dB of PSNR the FP16 artefacts may lose (default %(default)s)")
    p.add_argument("--max-drop-int8", type=float, default=DEFAULT_MAX_DROP_DB["int8"],
                   help="dB of PSNR the INT8 artefacts may lose (default %(default)s)")
    p.add_argument("--beside-weights", action="store_true",
                   help="only the fp32 ONNX, written beside the weights as <name>.onnx with their hash: how the "
                        "bundled models ship, so a runtime-only install runs them without torch")
    p.add_argument("-v", "--verbose", action="store_true", help="also the libraries' warnings and notes")
    p.add_argument("--drift-regions", type=non_negative_int, default=0,
                   help="validation regions the drift gate measures (0 = all)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, prog = parser.parse_args(argv), parser.prog  # `ssran-edge export` when reached through ssran-edge
    try:
        require("export", prog)
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 2
    # Our progress at INFO; the exporters' own chatter (onnxscript, onnx_ir, onnxslim, torch.onnx) with -v.
    configure_logging(args.verbose)
    try:
        from ssran_edge.assets import model_path
        from ssran_edge.export.pipeline import ExportOptions, run_export

        weights = model_path(args.weights)
        if args.beside_weights:
            from ssran_edge.export.onnx_export import export_weights

            print(f"wrote {export_weights(weights, weights.with_suffix('.onnx'))}")
            return 0
        output = Path(args.output or f"exports/{weights.stem}")
        opts = ExportOptions(
            weights=weights, output=output, fp16=args.fp16, int8=args.int8, engine=args.engine,
            fp16_io=args.fp16_io, dynamic=args.dynamic, simplify=args.simplify, imgsz=args.imgsz,
            batch=args.batch, data=args.data or "", data_root=args.data_root or "",
            calib_samples=args.calib_samples, calib_method=args.calib_method, calib_tile=args.calib_tile,
            workspace=args.workspace, device=args.device, drift_regions=args.drift_regions,
            float_blocks=args.float_blocks,
            max_drop_db={**DEFAULT_MAX_DROP_DB, "fp16": args.max_drop_fp16, "int8": args.max_drop_int8})
        manifest = run_export(opts)
    except SSRANEdgeError as exc:
        if isinstance(exc, DriftGateError):
            print((output / "drift.md").read_text())  # the table says by how much
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing half-written", file=sys.stderr)
        return 130
    print((output / "drift.md").read_text())
    for artefact in manifest.artefacts:
        print(f"wrote {output / artefact.file} ({artefact.bytes / 1e6:.2f} MB, {artefact.precision})")
    print(f"TensorRT: {manifest.tensorrt}")
    print(f"manifest: {output / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
