"""ssran-edge: SSRAN spectral super-resolution (MSI -> HSI), trained, exported and run at the edge.

Importing the package imports nothing heavy: the runtime runs without torch. `ssran_edge.SSRAN` and
`ssran_edge.LinearSkipSSRAN` load the model module (and torch) when first used.
"""

__version__ = "0.1.0"

__all__ = ["SSRAN", "LinearSkipSSRAN", "__version__"]


def __getattr__(name: str):
    if name in ("SSRAN", "LinearSkipSSRAN"):
        from ssran_edge import model

        return getattr(model, name)
    raise AttributeError(f"module 'ssran_edge' has no attribute {name!r}")
