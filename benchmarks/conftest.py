"""Options and parametrization of the benchmark suite (pytest benchmarks/ ...; see the README, "Benchmarks")."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from ssran_edge.bench import suite
from ssran_edge.errors import SSRANEdgeError


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ssran-edge bench")
    g.addoption("--bench-configs", default=",".join(suite.CONFIGS), help="bundled models (or weights paths)")
    g.addoption("--bench-sizes", default=",".join(map(str, suite.SIZES)), help="square frame sizes")
    g.addoption("--bench-precisions", default="fp32,fp16,int8")
    g.addoption("--bench-exports", default="exports", help="export folders live (or are built) here")
    g.addoption("--bench-stream-size", type=int, default=512, help="frame size of the end-to-end stream cases")
    g.addoption("--bench-stream-frames", type=int, default=6)
    g.addoption("--bench-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = cores)")
    g.addoption("--bench-quick-export", action="store_true", help="export with min/max calibration (the smoke)")
    g.addoption("--bench-artefacts", default="*",
                help="comma-separated patterns of the artefacts to measure (fnmatch on their labels, e.g. "
                     "'torch*,ort model_int8.onnx')")


def _csv(config: pytest.Config, name: str) -> list[str]:
    return [v for v in config.getoption(name).split(",") if v]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if "artefact" in metafunc.fixturenames:
        params = []
        for name in _csv(config, "--bench-configs"):
            try:
                export_dir = suite.ensure_export(name, Path(config.getoption("--bench-exports")),
                                                 quick=config.getoption("--bench-quick-export"))
            except SSRANEdgeError as exc:  # e.g. pavia without the data sets: its frames and validation split
                params.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=f"{name}: {exc}")))
                continue
            patterns = _csv(config, "--bench-artefacts")
            params += [pytest.param(a, id=a.key.replace(" ", "-"))
                       for a in suite.artefacts(name, export_dir, tuple(_csv(config, "--bench-precisions")))
                       if any(fnmatchcase(a.label, p) for p in patterns)]
        metafunc.parametrize("artefact", params, scope="module")
    if "size" in metafunc.fixturenames:
        sizes = [int(s) for s in _csv(config, "--bench-sizes")]
        metafunc.parametrize("size", sizes, ids=[f"{s}px" for s in sizes])


@pytest.fixture(scope="module")
def runner(artefact: suite.Artefact, request: pytest.FixtureRequest):
    """One activated runner per artefact, reused over frame sizes, at its fastest (ORT workers spinning)."""
    with suite.open_runner(artefact, request.config.getoption("--bench-threads")) as r:
        yield r


_ACCURACY: dict[str, dict] = {}


@pytest.fixture
def accuracy(artefact: suite.Artefact, runner) -> dict:
    """Accuracy of the artefact on real validation data, measured once per run."""
    if artefact.key not in _ACCURACY:
        _ACCURACY[artefact.key] = suite.accuracy(artefact, runner)
    return _ACCURACY[artefact.key]
