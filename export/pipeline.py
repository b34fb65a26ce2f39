"""One export: stage every artefact in a temp folder, gate each on accuracy drift against the fp32
PyTorch model, then move the ones that pass under their final names. A failing artefact never
appears under its final name; the run then exits non-zero."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ssran_edge import __version__
from ssran_edge.atomic import WriterLock, atomic_path, sha256_file, write_json
from ssran_edge.card import ModelCard
from ssran_edge.checkpoint import load_model
from ssran_edge.data.patches import DEFAULT_CALIBRATION, QAT_CALIBRATION, Calibration
from ssran_edge.data.protocols import Pair, ProtocolData, protocol_of_card
from ssran_edge.errors import DataError, DriftGateError, ExportError, SSRANEdgeError
from ssran_edge.export import drift as drift_gate
from ssran_edge.export.onnx_export import convert_fp16, export_fp32, ort_optimize, save_onnx, set_metadata
from ssran_edge.records import MANIFEST, Manifest, ManifestArtefact
from ssran_edge.runtime.backends import BACKEND, artefact_of, open_runner
from ssran_edge.runtime.engines import sidecar_path
from ssran_edge.runtime.runners import Runner

log = logging.getLogger("ssran_edge.export")


@dataclass
class ExportOptions:
    weights: Path
    output: Path
    fp16: bool = False
    int8: bool = False
    engine: bool = False  # insist on TensorRT engines (fail if TensorRT is missing)
    fp16_io: bool = False  # fp16 input/output tensors in the FP16 ONNX (default: fp32 I/O, casts inside)
    dynamic: bool = True
    simplify: bool = True
    imgsz: int = 0  # tile size the runtime feeds; 0 = the model card's
    batch: int = 4  # tiles per batch (TensorRT profile max)
    halo: int = 8
    data: str = ""  # protocol name; default: the model card's
    data_root: str = ""
    calib_samples: int = 0  # 0 / "": the model's calibration (default_calibration)
    calib_method: str = ""
    calib_tile: int = 0
    workspace: float = 4.0  # GiB, TensorRT builder
    device: str = "cpu"  # cpu, cuda:N or dla:N (TensorRT target)
    max_drop_db: dict[str, float] = field(default_factory=lambda: dict(drift_gate.DEFAULT_MAX_DROP_DB))
    drift_regions: int = 0  # 0 = every validation region
    # Residual blocks, counted from the output, that stay float in the INT8 model. None: the fewest that
    # pass the int8 gate on ONNX Runtime, tried from 0 up (see quantize.tail_block_nodes).
    float_blocks: int | None = None


def check_options(opts: ExportOptions) -> None:
    """Refuse flag combinations that make no sense, before any work."""
    if opts.fp16_io and not opts.fp16:
        raise ExportError("--fp16-io needs --fp16")
    if opts.device.startswith("dla") and not (opts.fp16 or opts.int8):
        raise ExportError("--device dla:N needs --fp16 or --int8 (DLA runs no fp32)")
    if opts.engine and not (opts.fp16 or opts.int8):
        raise ExportError("--engine builds FP16/INT8 TensorRT engines: add --fp16 and/or --int8")
    if not (opts.device == "cpu" or opts.device.startswith(("cuda", "dla"))):
        raise ExportError(f"--device {opts.device!r}: use cpu, cuda:N or dla:N")
    if opts.float_blocks is not None and not opts.int8:
        raise ExportError("--float-blocks chooses the float part of the INT8 model: add --int8")
    if opts.batch < 1 or opts.calib_samples < 0 or opts.imgsz < 0:
        raise ExportError("--batch, --calib-samples must be >= 1 and --imgsz >= 0")


def default_calibration(card: ModelCard) -> Calibration:
    """A quantization-aware card is calibrated as it was fine-tuned (min/max); any other by percentile."""
    return QAT_CALIBRATION if card.training.get("qat") else DEFAULT_CALIBRATION


def calibration_of(opts: ExportOptions) -> Calibration:
    return Calibration(opts.calib_method, opts.calib_samples, opts.calib_tile)


def validation_data(card: ModelCard, opts: ExportOptions) -> ProtocolData:
    protocol = opts.data or card.protocol
    try:
        data = protocol_of_card(card, opts.data_root or None, protocol)
    except DataError as exc:
        raise DataError(f"no validation/calibration data for protocol {protocol!r}: {exc}") from None
    if (data.in_bands, data.out_bands) != (card.in_bands, card.out_bands):
        raise DataError(f"protocol {protocol} has {data.in_bands} -> {data.out_bands} bands; "
                        f"the model takes {card.in_bands} -> {card.out_bands}")
    return data


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
    except OSError as exc:
        raise ExportError(f"output folder {folder} is not writable ({exc.strerror or exc})") from None


def run_export(opts: ExportOptions) -> Manifest:
    """Produce the artefacts; returns the manifest. Raises ExportError when a gate fails (after the
    passing artefacts have landed)."""
    check_options(opts)
    started = time.perf_counter()
    model, card = load_model(opts.weights)
    tile = opts.imgsz or card.inference.tile
    data = validation_data(card, opts)
    default = default_calibration(card)
    opts = replace(opts, calib_method=opts.calib_method or default.method,
                   calib_samples=opts.calib_samples or default.samples, calib_tile=opts.calib_tile or default.tile)
    if opts.int8 and card.training.get("qat") and calibration_of(opts) != QAT_CALIBRATION:
        log.warning("%s was fine-tuned through min/max calibration on %d tiles of %d px; "
                    "--calib-method/--calib-samples/--calib-tile give it ranges it was not trained with",
                    opts.weights, QAT_CALIBRATION.samples, QAT_CALIBRATION.tile)
    val: list[Pair] = data.val[: opts.drift_regions] if opts.drift_regions else data.val
    engine_wanted = opts.engine or opts.device.startswith(("cuda", "dla"))
    trt_ok, trt_reason = False, "not requested"
    if engine_wanted or opts.fp16 or opts.int8:
        from ssran_edge.runtime.engines import tensorrt_status

        trt_ok, trt_reason = tensorrt_status()
        if engine_wanted and not trt_ok:
            raise ExportError(f"TensorRT not available: {trt_reason}")
    _writable(opts.output)
    lock = WriterLock(opts.output / ".export.lock")
    if not lock.acquire():
        raise ExportError(f"{opts.output}: another export is writing this folder now (wait for it, or "
                          "choose another --output)")
    try:
        for stale in opts.output.glob(".staging-*"):  # a killed export's; we hold the lock, nobody else builds
            log.info("%s: removing the staging folder of an interrupted export", stale)
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=opts.output))
        try:
            manifest = _build_all(opts, model, card, data, val, tile, stage, trt_ok, trt_reason)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        manifest.seconds = round(time.perf_counter() - started, 1)
        manifest.write(opts.output / MANIFEST)
    finally:
        lock.release()
    failed = list(dict.fromkeys(d["artefact"] for d in manifest.drift if not d["passed"]))  # once, any condition
    if failed:
        raise DriftGateError(f"accuracy-drift gate failed for {', '.join(failed)} (see {opts.output / 'drift.md'}); "
                          "those artefacts were not written")
    return manifest


def _build_all(opts, model, card, data, val, tile, stage: Path, trt_ok: bool, trt_reason: str) -> Manifest:
    common = dict(export_tile=tile, export_halo=opts.halo, weights_sha256=sha256_file(opts.weights))
    # Every artefact, the reference too, runs through one runner, on each gated condition's inputs.
    conditions = {c.name: drift_gate.under(c, val) for c in drift_gate.gate_conditions(card.training)}
    with open_runner(opts.weights, "torch") as fp32_torch:
        references = {c: drift_gate.reference_outputs(fp32_torch.infer, pairs, card.out_bands, tile)
                      for c, pairs in conditions.items()}

    def gate(name: str, precision: str, runner: Runner) -> list[drift_gate.Drift]:
        results = []
        with runner:
            for condition, pairs in conditions.items():
                result = drift_gate.measure(name, precision, runner.infer, pairs, references[condition],
                                            card.out_bands, tile, opts.max_drop_db[precision], condition)
                log.info("%s (%s): PSNR %.3f dB vs GT (fp32 torch %.3f), %.2f dB vs fp32, gate %s", name, condition,
                         result.psnr_gt, result.psnr_gt_fp32, result.psnr_vs_fp32,
                         "pass" if result.passed else "FAIL")
                results.append(result)
        return results

    staged: list[tuple[str, list[drift_gate.Drift], dict]] = []  # (file name, drift per condition, manifest extra)
    notes: list[str] = []  # lines under drift.md's table

    def add_onnx(name: str, precision: str, extra: dict) -> None:
        """Gated on every installed backend the table says opens it: ONNX Runtime, and OpenVINO for a
        portable graph (not ONNX Runtime's own *_cpu.onnx)."""
        backends = [b for b in artefact_of(stage / name).opens if BACKEND[b].installed()]
        for i, backend in enumerate(backends):
            label = name if i == 0 else f"{name} via {backend}"
            staged.append((name, gate(label, precision, open_runner(stage / name, backend)), extra if i == 0 else {}))

    proto = export_fp32(model, imgsz=min(tile, 64), dynamic=opts.dynamic, simplify=opts.simplify)
    save_onnx(set_metadata(proto, card.metadata("fp32", **common)), stage / "model.onnx")
    add_onnx("model.onnx", "fp32", {"exporter": "torch.onnx dynamo", "simplified": opts.simplify})
    ort_optimize(stage / "model.onnx", stage / "model_cpu.onnx")
    add_onnx("model_cpu.onnx", "fp32", {"note": "ONNX Runtime ORT_ENABLE_ALL graph for the CPU provider "
                                                "(fused Conv+ReLU, NCHWc)"})
    if opts.fp16:
        io = "fp16" if opts.fp16_io else "fp32"
        fp16 = convert_fp16(proto, keep_io_types=not opts.fp16_io)
        save_onnx(set_metadata(fp16, card.metadata("fp16", io=io, **common)), stage / "model_fp16.onnx")
        add_onnx("model_fp16.onnx", "fp16", {"io": io})
    if opts.int8:
        import onnx

        from ssran_edge.data.patches import training_capture
        from ssran_edge.export.quantize import TileCalibrationReader

        # A model trained on sensor noise (or a photo's capture chain) is calibrated on tiles that went
        # through the same noise model (and chain).
        noise, photo = training_capture(card.training)
        reader = TileCalibrationReader(data.train, card.in_bands, opts.calib_samples, opts.calib_tile, noise=noise,
                                       photo=photo)
        calib = _quantize_within_gate(opts, reader, stage, gate)
        notes.append(_search_note(calib, opts.max_drop_db["int8"]))
        int8 = onnx.load(str(stage / "model_int8.onnx"))
        save_onnx(set_metadata(int8, card.metadata("int8", **common, **calib)), stage / "model_int8.onnx")
        add_onnx("model_int8.onnx", "int8", calib)
        from ssran_edge.export.quantize import ort_optimize_int8

        adds = ort_optimize_int8(stage / "model_int8.onnx", stage / "model_int8_cpu.onnx")
        add_onnx("model_int8_cpu.onnx", "int8", {**calib, "nhwc_residual_adds": adds,
                                                 "note": "ONNX Runtime's CPU graph of model_int8.onnx, residual adds "
                                                         "in NHWC (export/fuse.py)"})
    if trt_ok:
        staged += _build_engines(opts, card, tile, stage, gate)

    # Land what passed on every runtime it was gated on (an engine with its sidecar); drop what failed, and
    # any older file of that name, so a stale artefact never passes for the new one.
    artefacts: list[ManifestArtefact] = []
    for name in dict.fromkeys(name for name, _, _ in staged):
        rows = [(results, extra) for file, results, extra in staged if file == name]  # one per backend
        passed = all(result.passed for results, _ in rows for result in results)
        files = [name] + ([sidecar_path(Path(name)).name] if artefact_of(Path(name)).kind == "engine" else [])
        for f in files:
            if passed:
                os.replace(stage / f, opts.output / f)
            else:
                (opts.output / f).unlink(missing_ok=True)
        if passed:
            (result, *_), extra = rows[0]
            runtimes = artefact_of(Path(name)).runtimes[: len(rows)] if len(rows) > 1 else None
            artefacts.append(ManifestArtefact(name, result.precision, sha256_file(opts.output / name),
                                              (opts.output / name).stat().st_size, runtimes, extra))
    drifts = [r for _, results, _ in staged for r in results]
    with atomic_path(opts.output / "drift.md") as tmp:
        tmp.write_text(f"# Accuracy drift: {card.protocol} validation split ({len(val)} regions, "
                       f"tile {tile}; input: {', '.join(conditions)})\n\n{drift_gate.MD_HEADER}\n"
                       + "\n".join(d.markdown() for d in drifts) + "\n"
                       + "".join(f"\n{note}\n" for note in notes))
    write_json(opts.output / "drift.json", [d.to_dict() for d in drifts])
    return Manifest(ssran_edge_version=__version__, source_weights=str(opts.weights),
                    source_sha256=common["weights_sha256"], protocol=card.protocol,
                    bands=[card.in_bands, card.out_bands], tile=tile, halo=opts.halo, artefacts=artefacts,
                    drift=[d.to_dict() for d in drifts], tensorrt="built" if trt_ok else f"skipped: {trt_reason}",
                    options=_jsonable(opts))


def _quantize_within_gate(opts, reader, stage: Path, gate) -> dict:
    """Quantize model.onnx to model_int8.onnx with opts.float_blocks trailing blocks float or, left to
    auto, with the fewest (0 first) whose ONNX Runtime drift passes the int8 gate under every condition;
    each try is recorded (the last is gated again, on every backend, with the other artefacts)."""
    import onnx

    from ssran_edge.export.quantize import max_float_blocks, quantize_int8

    if opts.float_blocks is not None:
        return quantize_int8(stage / "model.onnx", stage / "model_int8.onnx", reader, opts.calib_method,
                             float_blocks=opts.float_blocks)
    most = max_float_blocks(onnx.load(str(stage / "model.onnx")))
    tries = []
    for blocks in range(most + 1):
        calib = quantize_int8(stage / "model.onnx", stage / "model_int8.onnx", reader, opts.calib_method,
                              float_blocks=blocks)
        if blocks == most:
            break  # the last resort: whatever it drifts, the gate below decides
        results = gate(f"model_int8.onnx, {blocks} float blocks", "int8",
                       open_runner(stage / "model_int8.onnx", "ort"))
        tries.append({"float_blocks": blocks, "drift_db": {r.condition: round(r.drop_db, 4) for r in results}})
        if all(r.passed for r in results):
            break
        log.info("int8 with %d float block(s) drifts beyond the gate; trying one more block float", blocks)
    return {**calib, "float_block_search": tries}


def _search_note(calib: dict, gate_db: float) -> str:
    """drift.md's line on the INT8 model's float blocks: chosen, or searched and each try's drift."""
    tries = calib.get("float_block_search")
    if tries is None:
        return f"INT8: {calib['float_blocks']} residual block(s) kept float (--float-blocks)."
    tried = "; ".join(f"{t['float_blocks']} float: " + ", ".join(f"{d:+.4f} dB {c}" for c, d in t["drift_db"].items())
                      for t in tries)
    chosen = calib["float_blocks"]
    why = ("the fewest whose drift on ONNX Runtime is within" if tries and tries[-1]["float_blocks"] == chosen
           else "the most the model allows: fewer drifted beyond")
    return f"INT8: {chosen} residual block(s) kept float, {why} the {gate_db} dB gate (--float-blocks auto; " \
           f"tried {tried or 'nothing fewer'})."


def _build_engines(opts, card, tile, stage, gate) -> list:
    from ssran_edge.export.tensorrt_engine import Profile, build_engine

    out = []
    dla = int(opts.device.split(":")[1]) if opts.device.startswith("dla") else None
    # Tiles are tile + 2 halo wide inside a frame and smaller at its borders or in small frames.
    profile = Profile.for_tiles(card.in_bands, tile + 2 * opts.halo, opts.batch, min_tile=16)
    cache = opts.output / "timing.cache"
    for precision, source in (("fp16", "model.onnx"), ("int8", "model_int8.onnx")):
        if not getattr(opts, precision):
            continue
        name = f"model_{precision}.engine"
        build_engine(stage / source, stage / name, precision=precision, profiles=[profile],
                     workspace_gib=opts.workspace, timing_cache=cache, dla_core=dla,
                     extra_metadata=card.metadata(precision))
        out.append((name, gate(name, precision, open_runner(stage / name, "trt")), {"dla_core": dla}))
    return out


def _jsonable(opts: ExportOptions) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}


__all__ = ["ExportOptions", "run_export", "SSRANEdgeError"]
