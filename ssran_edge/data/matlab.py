"""MATLAB files: v5 through scipy (in a child process: its parser can crash on damaged files), v7.3
through h5py. Its own module so that SRFs (a D matrix in a .mat) can read them without the readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssran_edge.errors import DataError


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(520)
    return b"\x89HDF\r\n\x1a\n" in head[:8] or head[512:520] == b"\x89HDF\r\n\x1a\n"


def load_mat_variables(path: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Load variables from a .mat file, v5 (scipy) or v7.3 (HDF5, h5py). v7.3 arrays are transposed
    back to MATLAB's axis order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        if _is_hdf5(path):
            import h5py

            out = {}
            with h5py.File(path, "r") as f:
                keys = [k for k in f.keys() if not k.startswith("#")]
                for key in names or keys:
                    if key in f and isinstance(f[key], h5py.Dataset):
                        out[key] = np.asarray(f[key][()]).T  # HDF5 stores MATLAB arrays transposed
            return out
        return _loadmat_isolated(path, names)
    except DataError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for corrupt files
        raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})") from None


def _loadmat_child(path: Path, names, conn) -> None:
    import scipy.io

    try:
        conn.send(("ok", {k: v for k, v in scipy.io.loadmat(path, variable_names=names).items()
                          if not k.startswith("__")}))
    except Exception as exc:  # noqa: BLE001 - handed to the parent as text
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _isolation():
    """A multiprocessing context whose children start from a clean process: a fork server (started
    once, single-threaded, scipy.io imported) where there is one, else spawn. Never a plain fork of
    this process: forking while other threads hold locks (ONNX Runtime's and OpenMP's pools, a video
    decoder's threads, the stream's stages) leaves the child waiting on them forever, as it did in CI."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["scipy.io"])
    return context


def _loadmat_isolated(path: Path, names) -> dict:
    """scipy.io.loadmat in a child process: on damaged v5 files scipy's compiled parser can crash the
    process (SIGSEGV/SIGBUS; reproduced with a few hundred byte-flipped files), which no try/except
    catches. A crash becomes one DataError here."""
    context = _isolation()
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_loadmat_child, args=(path, names, send), daemon=True)
    child.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:
        child.join()
        raise DataError(f"{path}: not a readable .mat file (the MATLAB parser crashed on it, "
                        f"exit {child.exitcode})") from None
    finally:
        receive.close()
    child.join()
    if status != "ok":
        raise DataError(f"{path}: not a readable .mat file ({value})")
    return value
