"""What reaches the terminal: our own lines, and third-party chatter only when asked for (-v).

At default verbosity stderr holds the command's lines alone (one line on a bad input). Python
warnings (numpy's overflow notes, library deprecations) become log records, shown with -v; so do the
warnings libraries log (spectral on a NaN no-data value, the exporters' notes) and ONNX Runtime's
session log (its severity follows the ssran_edge logger: see runtime.loaders.ort_session).
"""

from __future__ import annotations

import logging

OWN_HANDLERS = ("spectral",)  # libraries that attach a stderr handler to their logger at import
_verbose = False


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def configure_logging(verbose: bool = False) -> None:
    """Our messages at INFO (DEBUG with -v); everyone else's at ERROR (INFO with -v). Once verbose, a
    later call does not turn it down: `ssran-edge -v export` configures before export's own main does."""
    global _verbose
    _verbose = verbose = verbose or _verbose
    logging.captureWarnings(True)  # warnings.warn -> logger "py.warnings" at WARNING: hidden unless -v
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(message)s")
    root.setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("ssran_edge").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in OWN_HANDLERS:  # they print through their own handler at INFO whatever the root level
        logger = logging.getLogger(name)
        logger.removeFilter(_errors_only)
        if not verbose:
            logger.addFilter(_errors_only)
    logging.getLogger("torch.onnx").setLevel(logging.INFO if verbose else logging.ERROR)
