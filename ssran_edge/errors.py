"""Every exception ssran-edge raises on purpose, and how one is shown.

All derive from SSRANEdgeError: expected bad input or an environment that cannot do what was asked.
The CLIs print `one_line(exc)` and exit 2, never a traceback; what they print is decided by the
exception's type, never by its message text.
"""

from __future__ import annotations


class SSRANEdgeError(Exception):
    """A problem the user can act on: bad file, wrong band count, NaNs, a foreign checkpoint..."""


class DataError(SSRANEdgeError):
    """A cube, SRF or dataset that cannot be read or is not what was asked for."""


class CheckpointError(SSRANEdgeError):
    """A weights file that is missing, corrupt, unsafe or not made by ssran-edge."""


class MissingExtra(SSRANEdgeError):
    """A command whose optional dependencies (a pip extra) are not installed."""


class ArtefactError(SSRANEdgeError):
    """An ONNX file or engine that cannot be loaded: missing, corrupt, unsafe or not ours."""


class EngineError(ArtefactError):
    """An engine that cannot be built or loaded here: no TensorRT/GPU, foreign or corrupt engine, bad ONNX."""


class RunnerError(SSRANEdgeError):
    """A backend that cannot run here or cannot load its artefact."""


class SourceError(SSRANEdgeError):
    """A source that cannot be opened, or that failed and did not come back within its retries."""


class SinkError(SSRANEdgeError):
    """An output that cannot be written (unwritable folder, full disk, wrong shape)."""


class ExportError(SSRANEdgeError):
    """An export that cannot be produced or does not pass its checks."""


class DriftGateError(ExportError):
    """Artefacts written but refused: they lose more accuracy than the gate allows (see drift.md)."""


class RankLost(SSRANEdgeError):
    """A distributed training job lost one of its ranks (killed, crashed or stopped by torchrun)."""


def one_line(exc: BaseException | object) -> str:
    """An exception (or any message) as one line: whitespace runs and newlines collapse to one space;
    an empty message gives the exception's type name."""
    text = " ".join(str(exc).split())
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "")


def shown_path(path: object) -> str:
    """A file name as an error message shows it: as it is, or, when it holds a newline, a tab or any other
    character that does not print (an undecodable byte included), quoted with those escaped as Python
    writes them ('bad\\nname.npy'), so the message stays one line that names the file exactly."""
    text = str(path)
    return text if text.isprintable() else repr(text)
