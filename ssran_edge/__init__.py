"""ssran-edge: SSRAN spectral super-resolution (MSI -> HSI), trained, exported and run at the edge."""

__version__ = "0.1.0"

from ssran_edge.model import SSRAN, LinearSkipSSRAN  # noqa: E402

__all__ = ["SSRAN", "LinearSkipSSRAN", "__version__"]
