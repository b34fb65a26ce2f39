"""TensorRT engine build/load: the pure parts (profiles, sidecars, compatibility) always run; building and
loading real engines needs TensorRT and a GPU and is skipped, with the reason, where they are missing."""

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from ssran_edge.errors import EngineError, SSRANEdgeError
from ssran_edge.export.tensorrt_engine import Profile, build_engine
from ssran_edge.runtime.engines import (
    check_compatible,
    load_engine,
    platform_info,
    read_sidecar,
    sidecar_path,
    tensorrt_status,
)

IN_BANDS, OUT_BANDS = 4, 6
H200 = {"tensorrt": "10.7.0", "gpu": "NVIDIA H200", "compute_capability": "9.0", "dla_cores": 0}
ORIN = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "dla_cores": 2}


def sidecar_for(platform, **extra):
    return {"format": "ssran-edge-engine", "engine": "engine.plan", "tensorrt": platform["tensorrt"],
            "gpu": platform["gpu"], "compute_capability": platform["compute_capability"], "dla_core": None,
            "precision": "fp16", "profiles": [Profile.for_tiles(IN_BANDS, 64, 8).to_json()], "inputs": ["msi"],
            "outputs": ["hsi"], **extra}


def require_tensorrt() -> str:
    ok, reason = tensorrt_status()
    if not ok:
        pytest.skip(f"TensorRT not available: {reason}")
    return reason


def export_tiny_onnx(path):
    """A Conv2d+ReLU with the model's I/O contract: "msi" (N, 4, H, W) -> "hsi" (N, 6, H, W)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(IN_BANDS, OUT_BANDS, 3, padding=1), torch.nn.ReLU()).eval()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy (TorchScript) exporter warns that it is legacy
        torch.onnx.export(model, (torch.rand(1, IN_BANDS, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["msi"], output_names=["hsi"], dynamic_axes={"msi": axes, "hsi": axes})
    return path


def quantize_tiny_onnx(fp32_path, path):
    """Explicit quantization, as the export's int8 step does it: symmetric int8 Q/DQ from onnxruntime."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"msi": rng.random((1, IN_BANDS, 16, 16), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32_path), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


# ---------------------------------------------------------------- profiles


def test_profile_shapes_and_json_round_trip():
    profile = Profile.for_tiles(IN_BANDS, tile=64, batch=8, min_tile=32)
    assert profile.shapes() == ((1, 4, 32, 32), (8, 4, 64, 64), (8, 4, 64, 64))
    assert Profile.from_json(json.loads(json.dumps(profile.to_json()))) == profile
    assert Profile.for_tiles(IN_BANDS, 64, 8).min == (1, 64, 64)  # min_tile defaults to the tile


def test_profile_without_bands_takes_them_from_the_caller():
    profile = Profile(min=[1, 8, 8], opt=[4, 32, 32], max=[4, 32, 32])
    assert profile.min == (1, 8, 8)  # lists from JSON become tuples
    assert profile.shapes(3)[2] == (4, 3, 32, 32)
    with pytest.raises(EngineError, match="in_bands"):
        profile.shapes()
    with pytest.raises(EngineError, match="for 4 input bands but the model takes 5"):
        Profile.for_tiles(4, 64, 8).shapes(5)


@pytest.mark.parametrize("shapes", [((2, 8, 8), (1, 8, 8), (2, 8, 8)), ((1, 8, 8), (1, 64, 64), (1, 32, 32)),
                                    ((0, 8, 8), (1, 8, 8), (1, 8, 8)), ((1, 8), (1, 8, 8), (1, 8, 8))])
def test_profile_rejects_bad_shapes(shapes):
    with pytest.raises(EngineError):
        Profile(*shapes)


def test_profile_from_json_rejects_other_objects():
    with pytest.raises(EngineError, match="not an optimization profile"):
        Profile.from_json({"min": [1, 8, 8]})


# ---------------------------------------------------------------- compatibility (pure)


def test_engine_error_is_an_ssran_edge_error():
    assert issubclass(EngineError, SSRANEdgeError)


def test_compatible_on_the_same_platform():
    check_compatible(sidecar_for(H200), dict(H200))
    check_compatible(sidecar_for(ORIN, dla_core=1), dict(ORIN))


def test_other_tensorrt_version_is_refused_in_one_line():
    with pytest.raises(EngineError) as exc:
        check_compatible(sidecar_for(ORIN), dict(ORIN, tensorrt="10.7.0"))
    assert str(exc.value) == ("engine.plan was built with TensorRT 10.3.0 but this machine has 10.7.0; "
                              "rebuild it with python -m export")


def test_other_gpu_is_refused_in_one_line():
    with pytest.raises(EngineError) as exc:
        check_compatible(sidecar_for(ORIN, tensorrt="10.7.0"), dict(H200), name="ssran.plan")
    assert str(exc.value) == ("ssran.plan was built for Orin (sm_87), this GPU is NVIDIA H200 (sm_90); engines are "
                              "not portable between GPUs: rebuild it on this machine")


@pytest.mark.parametrize("platform", [dict(H200, gpu="NVIDIA H100 80GB HBM3"),  # same sm_90, another GPU
                                      dict(H200, compute_capability="8.9")])  # same name, another sm
def test_gpu_name_and_compute_capability_must_both_match(platform):
    with pytest.raises(EngineError, match="engines are not portable between GPUs") as exc:
        check_compatible(sidecar_for(H200), platform)
    assert "\n" not in str(exc.value)


NO_DLA_KEY = {k: v for k, v in H200.items() if k != "dla_cores"}


@pytest.mark.parametrize("platform,have", [(dict(H200), "no DLA"), (NO_DLA_KEY, "no DLA"),
                                           (dict(H200, dla_cores=1), "only 1 DLA core")])
def test_dla_engine_is_refused_without_that_dla_core(platform, have):
    with pytest.raises(EngineError) as exc:
        check_compatible(sidecar_for(H200, dla_core=1), platform)
    message = str(exc.value)
    assert message.startswith("engine.plan was built for DLA core 1 but this machine has " + have)
    assert "\n" not in message


# ---------------------------------------------------------------- sidecar files


def test_read_sidecar_round_trip(tmp_path):
    engine = tmp_path / "ssran.plan"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(json.dumps(sidecar_for(H200)))
    assert sidecar_path(engine).name == "ssran.plan.json"
    sidecar = read_sidecar(engine)
    assert sidecar.gpu == "NVIDIA H200" and sidecar.profiles == sidecar_for(H200)["profiles"]
    assert sidecar.to_dict() == sidecar_for(H200)  # the same keys back: files on disk stay readable


def test_missing_sidecar_is_refused(tmp_path):
    engine = tmp_path / "ssran.plan"
    engine.write_bytes(b"plan")
    with pytest.raises(EngineError, match=r"no sidecar ssran\.plan\.json beside the engine"):
        read_sidecar(engine)
    with pytest.raises(EngineError, match="no sidecar"):  # load_engine refuses before touching TensorRT
        load_engine(engine)


@pytest.mark.parametrize("text", ['{"format": "ssran-edge-engine", "gpu": ', "[1, 2]", '{"format": "other"}',
                                  '{"format": "ssran-edge-engine", "gpu": "x"}'])
def test_corrupt_sidecar_is_refused(tmp_path, text):
    engine = tmp_path / "ssran.plan"
    sidecar_path(engine).write_text(text)
    with pytest.raises(EngineError, match="corrupt sidecar") as exc:
        read_sidecar(engine)
    assert "\n" not in str(exc.value)


def test_load_refuses_missing_and_empty_engines(tmp_path):
    with pytest.raises(EngineError, match="no such engine"):
        load_engine(tmp_path / "absent.plan")
    (tmp_path / "empty.plan").write_bytes(b"")
    with pytest.raises(EngineError, match="empty engine file"):
        load_engine(tmp_path / "empty.plan")


# ---------------------------------------------------------------- status and build arguments (no TensorRT needed)


def test_tensorrt_status_never_raises():
    status = tensorrt_status()
    assert isinstance(status, tuple) and len(status) == 2
    ok, message = status
    assert isinstance(ok, bool) and isinstance(message, str) and message
    assert "\n" not in message


def test_platform_info_says_why_when_unavailable():
    ok, reason = tensorrt_status()
    if ok:
        pytest.skip(f"TensorRT is available here ({reason})")
    with pytest.raises(EngineError, match="TensorRT not available: ") as exc:
        platform_info()
    assert reason in str(exc.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"precision": "bf16"}, "precision must be one of fp32, fp16, int8"),
    ({"profiles": []}, "at least one optimization profile"),
    ({"precision": "fp32", "dla_core": 0}, "DLA runs fp16 or int8 only"),
    ({"precision": "int8"}, "no QuantizeLinear/DequantizeLinear nodes"),
    ({"workspace_gib": 0}, "workspace_gib must be positive"),
])
def test_build_arguments_are_checked_before_tensorrt(tiny_onnx, tmp_path, kwargs, match):
    args = {"precision": "fp16", "profiles": [Profile.for_tiles(IN_BANDS, 32, 2)], **kwargs}
    with pytest.raises(EngineError, match=match):
        build_engine(tiny_onnx, tmp_path / "e.plan", **args)
    assert not list(tmp_path.iterdir())


def test_build_refuses_a_missing_onnx_and_reserved_metadata(tiny_onnx, tmp_path):
    profiles = [Profile.for_tiles(IN_BANDS, 32, 2)]
    with pytest.raises(EngineError, match="no such ONNX file"):
        build_engine(tmp_path / "absent.onnx", tmp_path / "e.plan", precision="fp16", profiles=profiles)
    with pytest.raises(ValueError, match="may not override"):
        build_engine(tiny_onnx, tmp_path / "e.plan", precision="fp16", profiles=profiles,
                     extra_metadata={"gpu": "forged"})


def test_int8_build_refuses_an_unreadable_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model")
    with pytest.raises(EngineError, match="not a readable ONNX model"):
        build_engine(bad, tmp_path / "e.plan", precision="int8", profiles=[Profile.for_tiles(IN_BANDS, 32, 2)])


def test_build_without_tensorrt_says_so(tiny_onnx, tmp_path):
    ok, reason = tensorrt_status()
    if ok:
        pytest.skip(f"TensorRT is available here ({reason})")
    with pytest.raises(EngineError, match="TensorRT not available"):
        build_engine(tiny_onnx, tmp_path / "e.plan", precision="fp16", profiles=[Profile.for_tiles(IN_BANDS, 32, 2)])
    assert not (tmp_path / "e.plan").exists()


def test_qdq_model_passes_the_int8_check(tiny_onnx, tmp_path):
    qdq = quantize_tiny_onnx(tiny_onnx, tmp_path / "tiny.int8.onnx")
    ok, _ = tensorrt_status()
    if ok:
        pytest.skip("covered by test_int8_engine_from_qdq_model where TensorRT is available")
    with pytest.raises(EngineError, match="TensorRT not available"):  # got past the QDQ check
        build_engine(qdq, tmp_path / "e.plan", precision="int8", profiles=[Profile.for_tiles(IN_BANDS, 32, 2)])


# ---------------------------------------------------------------- real engines (TensorRT + GPU)


@pytest.fixture(scope="module")
def built(tiny_onnx, tmp_path_factory):
    """fp32 and fp16 engines from one ONNX, sharing one timing cache."""
    require_tensorrt()
    out = tmp_path_factory.mktemp("engines")
    cache = out / "timing.cache"
    profile = Profile.for_tiles(IN_BANDS, tile=32, batch=4, min_tile=8)
    engines = {}
    for precision in ("fp32", "fp16"):
        engines[precision] = build_engine(tiny_onnx, out / f"tiny.{precision}.plan", precision=precision,
                                          profiles=[profile], workspace_gib=0.5, timing_cache=cache,
                                          extra_metadata={"bands": [490.0, 560.0, 665.0, 842.0]})
        engines[f"{precision}_cache_bytes"] = cache.stat().st_size
    return engines, cache


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_loads_and_records_its_platform(built, tiny_onnx, precision):
    engines, _ = built
    path = engines[precision]
    engine, sidecar = load_engine(path)
    platform = platform_info()
    assert sidecar.to_dict()["format"] == "ssran-edge-engine" and sidecar.precision == precision
    assert {k: getattr(sidecar, k) for k in ("tensorrt", "gpu", "compute_capability")} == \
        {k: platform[k] for k in ("tensorrt", "gpu", "compute_capability")}
    assert sidecar.dla_core is None
    assert sidecar.inputs == ["msi"] and sidecar.outputs == ["hsi"]
    assert sidecar.profiles == [{"min": [1, 8, 8], "opt": [4, 32, 32], "max": [4, 32, 32], "in_bands": 4}]
    assert sidecar.onnx_sha256 == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert sidecar.extra["bands"] == [490.0, 560.0, 665.0, 842.0] and sidecar.build_time
    assert engine.num_io_tensors == 2 and engine.num_optimization_profiles == 1
    assert tuple(engine.get_tensor_shape("msi")) == (-1, IN_BANDS, -1, -1)
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes left nothing


def test_timing_cache_is_created_and_reused(built):
    engines, cache = built
    assert cache.is_file() and engines["fp32_cache_bytes"] > 0
    assert engines["fp16_cache_bytes"] >= engines["fp32_cache_bytes"]  # the second build loaded and extended it


def test_corrupt_engine_is_refused(built, tmp_path):
    engines, _ = built
    source = engines["fp16"]
    truncated = tmp_path / "cut.plan"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    sidecar = read_sidecar(source).to_dict()
    sidecar_path(truncated).write_text(json.dumps(sidecar))
    with pytest.raises(EngineError, match="corrupt or truncated engine"):  # caught by the checksum
        load_engine(truncated)
    sidecar.pop("engine_sha256")
    sidecar_path(truncated).write_text(json.dumps(sidecar))
    with pytest.raises(EngineError, match="corrupt or truncated engine"):  # caught by TensorRT itself
        load_engine(truncated)


def test_engine_from_another_tensorrt_is_refused(built, tmp_path):
    engines, _ = built
    copy = tmp_path / "old.plan"
    copy.write_bytes(engines["fp32"].read_bytes())
    sidecar = read_sidecar(engines["fp32"]).replace(tensorrt="8.6.2").to_dict()
    sidecar_path(copy).write_text(json.dumps(sidecar))
    with pytest.raises(EngineError, match=r"old\.plan was built with TensorRT 8\.6\.2 but this machine has"):
        load_engine(copy)


def test_int8_engine_from_qdq_model(tiny_onnx, tmp_path):
    require_tensorrt()
    qdq = quantize_tiny_onnx(tiny_onnx, tmp_path / "tiny.int8.onnx")
    path = build_engine(qdq, tmp_path / "tiny.int8.plan", precision="int8", workspace_gib=0.5,
                        profiles=[Profile.for_tiles(IN_BANDS, tile=32, batch=4, min_tile=8)])
    engine, sidecar = load_engine(path)
    assert sidecar.precision == "int8" and engine.num_io_tensors == 2


def test_unparseable_onnx_is_refused_in_one_line(tmp_path):
    require_tensorrt()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(EngineError, match="TensorRT cannot parse bad.onnx") as exc:
        build_engine(bad, tmp_path / "bad.plan", precision="fp32", profiles=[Profile.for_tiles(IN_BANDS, 32, 2)])
    assert "\n" not in str(exc.value)
