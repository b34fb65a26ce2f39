"""Optional parts of the install: which command needs which pip extra, checked before any work.

A base install runs models (ONNX Runtime); training, export, benchmarks, zarr output and previews
bring their own dependencies. A missing one is a single line naming the extra, exit code 2.
"""

from __future__ import annotations

from importlib.util import find_spec

from ssran_edge.errors import MissingExtra

EXTRAS = {  # extra -> the modules it brings that the commands below import
    "train": ("torch", "safetensors"),
    "export": ("torch", "safetensors", "onnxscript", "onnxslim"),
    "bench": ("torch", "safetensors", "onnxscript", "onnxslim", "pytest", "pytest_benchmark"),
    "zarr": ("zarr",),
    "geo": ("rasterio", "xarray", "rioxarray", "dask"),
    "distributed": ("dask", "distributed"),
    "preview": ("matplotlib",),
    "openvino": ("openvino",),
    "trt": ("tensorrt", "pycuda"),
    "raw": ("rawpy",),
    "heic": ("pillow_heif",),
}



def missing(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules), as a test does to hide one
        return False


def require(extra: str, command: str) -> None:
    """Raise MissingExtra("<command>: needs the [extra] extra: pip install ...") unless installed."""
    if missing(extra):
        raise MissingExtra(f"{command}: needs the [{extra}] extra: pip install 'ssran-edge[{extra}]'")
