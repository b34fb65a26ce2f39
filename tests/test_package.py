"""The package as users install it: one top-level name, layers that import one way, a runtime that needs
no torch, bundled ONNX models that are the bundled weights, and one line for a missing extra."""

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ssran_edge.assets import MODELS, demo_scene
from ssran_edge.card import ModelCard
from ssran_edge.runtime.backends import onnx_beside, select_runner
from ssran_edge.runtime.runners import OrtRunner, TorchRunner
from ssran_edge.srf import load_srf, simulate_msi
from ssran_edge.tiling import run_tiled

REPO = Path(__file__).resolve().parents[1]
# folder -> installed name, in layer order: each may import only the layers listed for it
LAYERS = {"ssran_edge": "core", "train": "train", "export": "export", "cpp_free_runtime": "runtime",
          "benchmarks": "bench"}
ALLOWED = {"core": {"core"}, "train": {"core", "train"}, "runtime": {"core", "runtime"},
           "export": {"core", "export", "runtime"}, "bench": {"core", "train", "export", "runtime", "bench"},
           "cli": {"core", "train", "export", "runtime", "bench", "cli", "api"},
           "api": {"core", "runtime", "export", "api"}}
STAGE_OF = {"ssran_edge.train": "train", "ssran_edge.export": "export", "ssran_edge.runtime": "runtime",
            "ssran_edge.bench": "bench", "ssran_edge.cli": "cli", "ssran_edge.xarray": "api"}
TOP = {"cli.py": "cli", "xarray.py": "api"}  # ssran_edge/ files above the stages: the user's entry points
# a base install (pip install ssran-edge) has none of these: the [train]/[export]/[zarr]/[preview] extras
NOT_IN_BASE = ["torch", "safetensors", "onnxscript", "onnxslim", "matplotlib", "zarr", "openvino"]


def _layer_of_module(name: str) -> str | None:
    if name != "ssran_edge" and not name.startswith("ssran_edge."):
        return None
    return next((layer for prefix, layer in STAGE_OF.items() if name == prefix or name.startswith(prefix + ".")),
                "core")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at top level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_imports_flow_one_way():
    """core <- train, export, runtime <- bench <- CLI (and the xarray API); export may use the runtime
    (loaders, runners for the drift gate), the runtime never imports export or train. Checked on the
    source, lazy imports included."""
    wrong = []
    for folder, layer in LAYERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            own = TOP.get(path.name, layer) if path.parent == REPO / "ssran_edge" else layer
            for line, module in _imports(path):
                target = _layer_of_module(module)
                if target is not None and target not in ALLOWED[own]:
                    wrong.append(f"{path.relative_to(REPO)}:{line} ({own}) imports {module} ({target})")
    assert not wrong, "\n".join(wrong)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_the_runtime_imports_neither_torch_nor_the_other_stages():
    runtime = [f"ssran_edge.runtime.{p.stem}" for p in sorted((REPO / "cpp_free_runtime").glob("*.py"))
               if p.stem != "__main__"]
    loaded = _modules_after("import ssran_edge, ssran_edge.cli\n" + "\n".join(f"import {m}" for m in runtime))
    assert not loaded & {"torch", "onnxscript", "onnxslim", "safetensors", "matplotlib", "zarr"}
    assert not {m for m in loaded if m.startswith(("ssran_edge.export", "ssran_edge.train", "ssran_edge.bench"))}


def _base_install(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`ssran-edge ARGS` in a process where the extras' packages cannot be imported (as after a plain
    `pip install ssran-edge`): each is None in sys.modules, so `import torch` raises ImportError."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({NOT_IN_BASE!r}))\n"
            f"from ssran_edge.cli import main\nsys.exit(main({args!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "SSRAN_CACHE": str(tmp_path / "cache")})


def test_predict_and_run_work_without_torch(tmp_path):
    """The bundled models run on a base install: ONNX Runtime on the ONNX shipped beside the weights."""
    predicted = _base_install(["predict", "--model", "cave", "--output", str(tmp_path / "p.npy")], tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert "ort-cpu" in predicted.stdout and "PSNR" in predicted.stdout
    assert np.load(tmp_path / "p.npy").shape == (256, 256, 31)
    ran = _base_install(["run", "camera_stream", "--model", "cave_ssran", "--frames", "1", "--output",
                         str(tmp_path / "out")], tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "backend: ort-cpu" in ran.stderr and json.loads(ran.stdout)["frames"] == 1
    assert not (tmp_path / "cache").exists()  # nothing was exported on the way


@pytest.mark.parametrize(("args", "line"), [
    (["train", "--epochs", "1"], "ssran-edge train: needs the [train] extra: pip install 'ssran-edge[train]'"),
    (["export", "--fp16"], "ssran-edge export: needs the [export] extra: pip install 'ssran-edge[export]'"),
    (["bench", "--smoke"], "ssran-edge bench: needs the [bench] extra: pip install 'ssran-edge[bench]'"),
    (["evaluate"], "ssran-edge evaluate: needs the [train] extra: pip install 'ssran-edge[train]'"),
    (["run", "--backend", "torch", "--max-frames", "1"], "the torch backend needs PyTorch: pip install "
                                                         "'ssran-edge[train]'"),
    (["run", "--max-frames", "1", "--output", "o.zarr"], "zarr output: needs the [zarr] extra"),
    (["run", "--max-frames", "1", "--preview", "p"], "--preview: needs the [preview] extra"),
])
def test_a_missing_extra_is_one_line_and_exit_2(tmp_path, args, line):
    result = _base_install(args, tmp_path)
    assert result.returncode == 2 and line in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bundled_onnx_is_the_bundled_weights(name):
    """Each bundled ONNX was exported from the weights beside it (hash in its metadata), carries the same
    card fields, and gives the torch model's output on a real frame within fp32 rounding."""
    weights = MODELS[name]
    onnx_path = onnx_beside(weights)
    assert onnx_path == weights.with_suffix(".onnx")
    card = ModelCard.read(weights)
    with TorchRunner(weights) as torch_runner, OrtRunner(onnx_path) as ort_runner:
        assert ort_runner.card.metadata("fp32") == card.metadata("fp32")
        scene = demo_scene()
        if card.in_bands == 3:
            msi = simulate_msi(scene.data[:80, :72], load_srf(card.srf).matrix_for(scene.wavelengths, 31))
        else:  # a real-data crop is not needed for agreement: any in-range input of the right band count
            msi = np.random.default_rng(0).uniform(0, 1, (80, 72, card.in_bands)).astype(np.float32)
        ref = run_tiled(torch_runner.infer, msi, card.out_bands, tile=48)
        out = run_tiled(ort_runner.infer, msi, card.out_bands, tile=48)
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_weights_with_a_stale_onnx_beside_them_do_not_use_it(tmp_path):
    weights = tmp_path / "m.safetensors"
    shutil.copy(MODELS["cave"], weights)
    shutil.copy(MODELS["cave"].with_suffix(".json"), tmp_path / "m.json")
    shutil.copy(MODELS["pavia"].with_suffix(".onnx"), tmp_path / "m.onnx")  # exported from other weights
    assert onnx_beside(weights) is None
    with pytest.raises(Exception, match="no ONNX exported from these weights"):
        select_runner(weights, "ort")
    exported = []
    selection = select_runner(weights, "ort", onnx_for=lambda w: exported.append(w) or MODELS["cave"].with_suffix(
        ".onnx"))
    assert exported == [weights] and selection.backend == "ort-cpu"


def _wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the tracked files (an in-tree build would leave build/ behind)."""
    src = tmp_path / "src"
    for name in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.splitlines():
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=600)
    return next((tmp_path / "dist").glob("ssran_edge-*.whl"))


def test_the_wheel_installs_one_package(tmp_path):
    """Exactly one top-level package, `ssran_edge`, with the stages under it; the normal install runs
    from anywhere (here: no checkout on the path), `python -m ssran_edge.export` included."""
    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"ssran_edge"}
    for stage in ("train", "export", "runtime", "bench"):
        assert f"ssran_edge/{stage}/__init__.py" in names
    assert {f"ssran_edge/assets/models/{m}.onnx" for m in MODELS} <= set(names)
    assert "ssran_edge/bench/pytest.ini" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # Only the installed copy: without the checkout's editable-install finder, which would resolve any
    # module missing from the wheel in the checkout and hide it.
    code = ("import sys, json, runpy\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]\n"
            f"sys.path.insert(0, {str(site)!r})\n"
            f"sys.argv = ['ssran-edge', 'predict', '--output', {str(tmp_path / 'p.npy')!r}]\n"
            "try:\n    runpy.run_module('ssran_edge.cli', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "import ssran_edge.export.__main__, ssran_edge.train.__main__, ssran_edge.bench.report\n"
            "print(json.dumps({m.__name__: m.__file__ for m in list(sys.modules.values())\n"
            "                  if m.__name__.startswith('ssran_edge') and getattr(m, '__file__', None)}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "PSNR" in result.stdout, result.stderr
    files = json.loads(result.stdout.splitlines()[-1])
    assert len(files) > 20 and all(path.startswith(str(site)) for path in files.values()), files


def _module_graph() -> dict[str, set[str]]:
    """ssran_edge module -> the ssran_edge modules it imports (top level or inside functions). `from
    package import name` counts as importing the submodule `package.name` when there is one, else the
    package itself; a package's own __init__ is left out (importing a submodule runs it by definition)."""
    modules = {}
    for folder, installed in (("ssran_edge", "ssran_edge"), ("train", "ssran_edge.train"),
                              ("export", "ssran_edge.export"), ("cpp_free_runtime", "ssran_edge.runtime"),
                              ("benchmarks", "ssran_edge.bench")):
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if parts[-1] == "__init__" or (folder == "ssran_edge" and parts[0] in ("train", "export")):
                continue
            modules[".".join((installed, *parts))] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles():
    """No two modules import each other, directly or round a longer loop, lazy imports included: a
    cycle is a file doing two jobs (readers <-> geo once did, over `Cube`)."""
    graph, cycles = _module_graph(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(graph) > 50 and not cycles, "\n".join(cycles)
