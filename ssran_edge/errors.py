"""One exception type for expected bad input; the CLI prints its message as one line and exits 2."""


class SSRANEdgeError(Exception):
    """A problem the user can act on: bad file, wrong band count, NaNs, a foreign checkpoint..."""


class DataError(SSRANEdgeError):
    """A cube, SRF or dataset that cannot be read or is not what was asked for."""


class CheckpointError(SSRANEdgeError):
    """A weights file that is missing, corrupt, unsafe or not made by ssran-edge."""
