"""`ssran-edge run SOURCE`: a stream of multispectral frames -> hyperspectral cubes.

  ssran-edge run camera_stream                 the bundled CAVE crop replayed through the Nikon D700 SRF
                                               as a simulated camera, into the bundled model, best backend
  ssran-edge run camera_stream:0               a real camera (device index), or a video file, an RTSP URL,
                                               or a GStreamer pipeline (Jetson CSI: "nvarguscamerasrc ! ...")
  ssran-edge run frames/ --output cubes.zarr   a folder of frames (JPEG/PNG/TIFF/raw/npy/ENVI)
  ssran-edge run big.npy --window 2048 --output big.hdr   a very large scene, in windows, bounded memory
  ssran-edge run replay:cube.mat --srf sentinel2a         any hyperspectral cube through any SRF
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ssran_edge.arguments import (
    BACKEND_HELP,
    MIN_TILE,
    add_encoding_argument,
    add_raster_arguments,
    backend_choices,
    is_geotiff_output,
    non_negative_int,
    positive_int,
    raster_options,
    tile_size,
)
from ssran_edge.errors import DataError

log = logging.getLogger("ssran_edge.runtime")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", default="camera_stream",
                   help="camera_stream (the bundled CAVE crop as a simulated camera; default), camera_stream:N "
                        "(camera N), camera_stream:VIDEO|URL|PIPELINE, a folder of frames, a photo (.jpg, .png...), "
                        "a camera raw file (.dng, .nef...), a scene file (.npy, ENVI, .mat, GeoTIFF/JP2), or "
                        "replay:CUBE with --srf")
    p.add_argument("--model", help="checkpoint, ONNX or TensorRT engine, or bundled: cave, cave_ssran, srgb, paris, "
                                   "pavia (default: srgb for sRGB-encoded photos and video, cave for linear values)")
    p.add_argument("--backend", default="auto", choices=backend_choices(), help=BACKEND_HELP)
    p.add_argument("--device", default="", help="cpu or cuda[:N]; with --backend openvino: CPU, GPU[.N], NPU or AUTO "
                   "(default: the best available)")
    p.add_argument("--tile", type=tile_size, default=0, help=f"tile size, >= {MIN_TILE} (default: the model's)")
    p.add_argument("--halo", type=non_negative_int, default=8,
                   help="context pixels around each tile (>= 6 for SSRAN; default %(default)s)")
    p.add_argument("--batch", type=non_negative_int, default=0,
                   help="tiles per inference call (default: 1 on a CPU, where it is fastest and smallest; 4 on a GPU)")
    p.add_argument("--output", help="a folder (.npy per frame), name.zarr, name.hdr (ENVI) or name.tif (GeoTIFF)")
    p.add_argument("--preview", help="path prefix for false-colour PNGs and spectra plots")
    p.add_argument("--srf", help="SRF for replay: sources (bundled name or file)")
    p.add_argument("--frames", type=positive_int, default=1,
                   help="frames to replay from a replay:/camera_stream cube (default %(default)s)")
    p.add_argument("--max-frames", type=non_negative_int, default=0, help="stop after N frames (0 = the whole source)")
    p.add_argument("--window", type=non_negative_int, default=0, help="read a large scene in windows of N px")
    p.add_argument("--queue", type=positive_int, default=4, help="frames waiting between stages (default %(default)s)")
    p.add_argument("--read-timeout", type=float, default=10.0,
                   help="seconds a live camera's read may block before it counts as failed (retry, reconnect; "
                        "default %(default)s)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    p.add_argument("--summary-json", help="write the run summary here")
    add_encoding_argument(p)
    add_raster_arguments(p)


def run_command(args: argparse.Namespace, onnx_for: Callable[[Path], Path] | None = None) -> int:
    """onnx_for: how to get an ONNX for weights that have none beside them (see backends.select_runner)."""
    from ssran_edge.assets import model_for
    from ssran_edge.atomic import check_writable
    from ssran_edge.encoding import resolve
    from ssran_edge.geo import GeoTiffOptions
    from ssran_edge.runtime.backends import select_runner
    from ssran_edge.runtime.preview import Preview
    from ssran_edge.runtime.sinks import card_tags, open_sink
    from ssran_edge.runtime.sources import RasterSource, WindowedSceneSource, open_source

    if args.summary_json:  # found after the last frame otherwise
        check_writable(args.summary_json, "--summary-json")
    geotiff_output = is_geotiff_output(args.output, args)
    raster = raster_options(args)
    source = open_source(args.source, srf=args.srf, frames=args.frames, window=args.window or None,
                         read_timeout=args.read_timeout, raster=raster)
    # --model left out: the model for the source's encoding (sRGB photos and video -> srgb, linear -> cave);
    # a source that knows its encoding only once open (a folder, a photo) opens here (open is idempotent:
    # the stream's own open is then a no-op); the rest open after the output's lock.
    try:
        if not args.model and source.encoding is None and args.input_encoding == "auto":
            source.open()
        encoding = resolve(args.input_encoding, source.encoding or "linear")
        selection = select_runner(model_for(args.model, encoding), args.backend, args.device, args.threads,
                                  onnx_for=onnx_for)
    except BaseException:
        source.close()
        raise
    if raster is not None and not isinstance(source, RasterSource):
        raise DataError(f"--bands, --scale and --offset apply to a GeoTIFF/JP2/VRT source; {source.name} is not one")
    if args.window and not isinstance(source, WindowedSceneSource):  # found after inference otherwise
        raise DataError(f"--window reads one large scene file (.npy, ENVI, ...) in windows; {source.name} is "
                        "not one: drop --window")
    windowed = isinstance(source, WindowedSceneSource)
    geotiff = (GeoTiffOptions(args.dtype, args.cog, args.compress, card_tags(selection))
               if geotiff_output else None)
    sink = (open_sink(args.output, large_scene=bool(args.window) or windowed, single_frame=source.single_frame,
                      geotiff=geotiff) if args.output else None)
    previews = Preview(args.preview, wavelengths=selection.wavelengths) if args.preview else None
    if sink is not None:
        sink.lock()  # now, before the source opens: a second run on this output stops here, in one line
    try:
        return _run(args, selection, source, sink, previews)
    finally:
        if sink is not None:
            sink.unlock()


def _run(args, selection, source, sink, previews) -> int:
    from tqdm import tqdm

    from ssran_edge.atomic import write_json
    from ssran_edge.runtime.pipeline import default_batch, open_stream

    with selection.runner as runner, source:
        card = selection.card
        pipeline = open_stream(source, runner, sink, selection.wavelengths, camera=card.srf if card else None,
                               encoding=args.input_encoding, tile=args.tile or selection.tile, halo=args.halo,
                               batch=args.batch or default_batch(runner), queue_size=args.queue,
                               previews=previews, max_frames=args.max_frames)
        if sink is not None and source.geo is not None and not source.geo.georeferenced:
            print(f"note: {source.name} has no georeferencing (no CRS or geotransform); neither has the output",
                  file=sys.stderr)
        # Said once model, source and output are known good: bad input is then the only line on stderr.
        print(f"backend: {selection.backend} ({selection.reason})", file=sys.stderr)
        bar = pipeline.progress = tqdm(desc=source.name, unit="frame", dynamic_ncols=True, disable=None)
        signals: list[int] = []

        def stop(signum, _frame) -> None:
            signals.append(signum)
            log.warning("%s: finishing the frames in flight, then stopping", signal.Signals(signum).name)
            pipeline.stop()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stats = pipeline.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            bar.close()
            if sink is not None:
                sink.close()
    summary = {"model": str(selection.model), "backend": selection.backend, "source": source.name, **stats.summary(),
               "interrupted_by": signal.Signals(signals[0]).name if signals else None}
    if args.summary_json:
        write_json(args.summary_json, summary)
    print(json.dumps(summary, indent=2))
    return 128 + signals[0] if signals else 0  # the shell's convention for a signalled stop
