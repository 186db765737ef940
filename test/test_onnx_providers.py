"""onnxruntime on a GPU, as far as a CPU machine shows it: the providers asked for (TensorRT and
CUDA options), the check of what the session got (a CPU-only onnxruntime asked for CUDA), and
the IO-bound run that keeps tensors where they live."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch

from panoptic_depthlab_ros.backends import load_exported_network
from panoptic_depthlab_ros.errors import CheckpointError, PanopticDepthLabError
from panoptic_depthlab_ros.export import export_model
from panoptic_depthlab_ros.onnx_backend import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    ENV_MISSING_PROVIDER,
    ENV_TENSORRT,
    TENSORRT_PROVIDER,
    OnnxNetwork,
    ProviderSettings,
    engine_folder,
    missing_providers,
    provider_request,
)

CUDA1 = torch.device("cuda", 1)
ALL = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]


@pytest.fixture(scope="module")
def export(tmp_path_factory, tiny_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    export_model(tiny_checkpoint, path, dynamic=True)
    return path


def test_the_cpu_asks_for_the_cpu_provider_only() -> None:
    assert provider_request(torch.device("cpu"), ALL, ProviderSettings(), None) == ([(CPU_PROVIDER, {})], [])


def test_tensorrt_gets_its_device_engine_cache_and_fp16(tmp_path) -> None:
    request, required = provider_request(CUDA1, ALL, ProviderSettings(tensorrt_fp16=True), tmp_path)
    assert request == [
        (
            TENSORRT_PROVIDER,
            {
                "device_id": "1",
                "trt_fp16_enable": "True",
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(tmp_path),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(tmp_path),
            },
        ),
        (CUDA_PROVIDER, {"device_id": "1"}),
        (CPU_PROVIDER, {}),
    ]
    assert required == [CUDA_PROVIDER]  # auto: TensorRT is tried, CUDA must be there
    request, required = provider_request(CUDA1, ALL, ProviderSettings(tensorrt="on"), tmp_path)
    assert request[0][1]["trt_fp16_enable"] == "False" and required == [TENSORRT_PROVIDER, CUDA_PROVIDER]


def test_tensorrt_is_asked_for_only_when_listed_or_required() -> None:
    cuda_only = [CUDA_PROVIDER, CPU_PROVIDER]
    plain = [(CUDA_PROVIDER, {"device_id": "0"}), (CPU_PROVIDER, {})]
    assert provider_request(torch.device("cuda"), cuda_only, ProviderSettings(), None) == (plain, [CUDA_PROVIDER])
    assert provider_request(torch.device("cuda:0"), ALL, ProviderSettings(tensorrt="off"), None)[0] == plain
    request, required = provider_request(torch.device("cuda"), cuda_only, ProviderSettings(tensorrt="on"), None)
    assert request[0] == (TENSORRT_PROVIDER, {"device_id": "0", "trt_fp16_enable": "False"})
    assert required == [TENSORRT_PROVIDER, CUDA_PROVIDER]


def test_a_lost_optional_tensorrt_warns_and_a_lost_cuda_is_an_error() -> None:
    request, required = provider_request(CUDA1, ALL, ProviderSettings(), None)
    error, warning = missing_providers("m.onnx", CUDA1, request, required, [CUDA_PROVIDER, CPU_PROVIDER], ALL)
    assert error is None
    assert warning == (
        "m.onnx on cuda:1: onnxruntime was asked for TensorrtExecutionProvider, CUDAExecutionProvider,"
        " CPUExecutionProvider and got CUDAExecutionProvider, CPUExecutionProvider; TensorrtExecutionProvider did"
        " not load (CUDA, cuDNN or TensorRT libraries missing or of another version: see the log above)"
    )
    error, warning = missing_providers("m.onnx", CUDA1, request, required, [CPU_PROVIDER], ALL)
    assert warning is None and error is not None
    assert "TensorrtExecutionProvider did not load" in error and "CUDAExecutionProvider did not load" in error
    assert missing_providers("m.onnx", CUDA1, request, required, ALL, ALL) == (None, None)


def test_settings_from_the_environment(monkeypatch, tmp_path) -> None:
    assert ProviderSettings.from_env() == ProviderSettings()
    monkeypatch.setenv(ENV_TENSORRT, "on")
    monkeypatch.setenv("PANOPTIC_DEPTHLAB_TENSORRT_FP16", "1")
    monkeypatch.setenv("PANOPTIC_DEPTHLAB_ENGINE_CACHE", str(tmp_path))
    monkeypatch.setenv(ENV_MISSING_PROVIDER, "warn")
    assert ProviderSettings.from_env() == ProviderSettings("on", True, tmp_path, "warn")
    monkeypatch.setenv(ENV_TENSORRT, "maybe")
    with pytest.raises(PanopticDepthLabError, match="PANOPTIC_DEPTHLAB_TENSORRT / tensorrt must be auto, on or off"):
        ProviderSettings.from_env()


def test_the_engine_folder_changes_with_the_export(tmp_path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"one")
    first = engine_folder(model, tmp_path / "cache")
    assert first.parent == tmp_path / "cache" and first.name.startswith("m-")
    assert engine_folder(model, tmp_path / "cache") == first
    time.sleep(0.01)
    model.write_bytes(b"other")  # re-exported
    assert engine_folder(model, tmp_path / "cache") != first


@pytest.mark.skipif(CUDA_PROVIDER in __import__("onnxruntime").get_available_providers(), reason="a GPU onnxruntime")
def test_a_cpu_only_onnxruntime_asked_for_cuda_refuses_or_warns(export, tmp_path, monkeypatch, caplog) -> None:
    settings = ProviderSettings(engine_cache=tmp_path / "engines")
    with pytest.raises(
        CheckpointError,
        match=r"tiny.onnx on cuda: onnxruntime was asked for CUDAExecutionProvider,"
        r" CPUExecutionProvider and got CPUExecutionProvider; this onnxruntime has no"
        r" CUDAExecutionProvider \(the CPU-only 'onnxruntime' package\?",
    ):
        OnnxNetwork(export, device=torch.device("cuda"), threads=1, providers=settings)
    assert not (tmp_path / "engines").exists()  # no TensorRT asked for, no cache made
    # TensorRT required: asked for with its cache folder, and both providers named as missing.
    with pytest.raises(
        CheckpointError, match="this onnxruntime has no TensorrtExecutionProvider .*; this onnxruntime has no CUDA"
    ):
        OnnxNetwork(
            export,
            device=torch.device("cuda"),
            threads=1,
            providers=ProviderSettings("on", engine_cache=tmp_path / "engines"),
        )
    assert [p.name for p in (tmp_path / "engines").iterdir()] == [engine_folder(export, tmp_path / "engines").name]
    # Warn instead (the environment setting, through the loader the tools use): loud, and on the CPU.
    monkeypatch.setenv(ENV_MISSING_PROVIDER, "warn")
    with caplog.at_level(logging.INFO, logger="panoptic_depthlab_ros.onnx_backend"):
        network, *_ = load_exported_network(export, "onnxruntime", device=torch.device("cuda"))
    assert network.providers == [CPU_PROVIDER] and not network.io_binding
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].endswith(
        "this onnxruntime has no CUDAExecutionProvider (the CPU-only 'onnxruntime' package? install"
        " 'onnxruntime-gpu' built for this CUDA): RUNNING ON CPUExecutionProvider"
    )
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [f"{export}: onnxruntime providers CPUExecutionProvider on cuda"]


def test_io_binding_gives_the_outputs_of_a_plain_run_in_fresh_tensors(export) -> None:
    network = OnnxNetwork(export, device=torch.device("cpu"), threads=1, providers=ProviderSettings())
    assert network.providers == [CPU_PROVIDER] and not network.io_binding  # the CPU keeps the plain run
    assert network.output_channels == [network.session.get_outputs()[0].shape[1], 1, 2, 1]
    gen = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(1, 3, 64, 128, generator=gen), torch.randn(1, 3, 96, 160, generator=gen)
    plain = network(x1)
    bound = network.run_bound(x1)
    assert all(torch.equal(plain[k], bound[k]) for k in plain)
    kept = {k: v.clone() for k, v in bound.items()}
    again = network.run_bound(x2)  # another size: new buffers, the first outputs untouched
    assert again["sem_seg"].shape[-2:] == (96, 160)
    assert all(torch.equal(kept[k], bound[k]) and again[k].data_ptr() != bound[k].data_ptr() for k in bound)
