"""The Predictor's GPU-facing paths, as far as the CPU shows them: a compiled network's outputs
owned under flip and multi-scale averaging (CUDA graphs reuse their output buffers), the
synchronisation of the predictor's own device, the warm-up frame and its failures, release."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from panoptic_depthlab_ros.errors import PanopticDepthLabError
from panoptic_depthlab_ros.predictor import Predictor, WarmUpError, synchronize


class GraphReplay:
    """What a CUDA-graph compiled network does with its outputs: one set of buffers per input
    shape, overwritten by every call of that shape (``reduce-overhead``, ``max-autotune``)."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self.buffers: dict[tuple[int, ...], dict[str, Tensor]] = {}

    def __call__(self, x: Tensor, **kwargs) -> dict[str, Tensor]:
        out = self.network(x, **kwargs)
        static = self.buffers.setdefault(tuple(x.shape), {k: torch.empty_like(v) for k, v in out.items()})
        for k, v in out.items():
            static[k].copy_(v)
        return static


def _image(seed: int, h: int = 64, w: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _replaying(monkeypatch: pytest.MonkeyPatch) -> list[GraphReplay]:
    made: list[GraphReplay] = []

    def compile_(network, **kwargs):
        made.append(GraphReplay(network))
        return made[-1]

    monkeypatch.setattr(torch, "compile", compile_)
    return made


@pytest.mark.parametrize("options", [{"flip_average": True}, {"flip_average": True, "scales": (0.5, 1.0, 2.0)}])
def test_a_compiled_network_gives_the_eager_results_under_averaging(tiny_checkpoint: Path, monkeypatch, options):
    eager = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", **options)
    made = _replaying(monkeypatch)
    compiled = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", compile_mode="reduce-overhead", **options)
    assert compiled.compiled and len(made) == 1
    image = _image(0)
    expected = eager.raw(image)
    got = compiled.raw(image)
    assert len(made[0].buffers) == len(options.get("scales", (1.0,)))  # one per size: the mirrored pass reused it
    assert all(torch.allclose(got[k], expected[k], atol=1e-5) for k in expected)
    # The same replaying network without the predictor's copy: the mirrored pass overwrites the first.
    unowned = Predictor(
        GraphReplay(eager.network),  # type: ignore[arg-type]
        model_config=eager.model_config,
        classes=eager.classes,
        optimize=False,
        **options,
    )
    wrong = unowned.raw(image)
    assert not torch.allclose(wrong["center"], expected["center"], atol=1e-3)


def test_outputs_of_repeated_calls_are_not_aliased(tiny_checkpoint: Path, monkeypatch) -> None:
    _replaying(monkeypatch)
    compiled = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", compile_mode="max-autotune")
    first = compiled.raw(_image(1))
    kept = {k: v.clone() for k, v in first.items()}
    second = compiled.raw(_image(2))
    assert all(torch.equal(first[k], kept[k]) for k in first)  # the second call left the first alone
    assert not torch.equal(first["sem_seg"], second["sem_seg"])
    result = compiled.predict(_image(1))
    assert np.array_equal(result.depth, kept["depth"][0].numpy())


def test_synchronize_waits_for_the_predictors_own_gpu(monkeypatch) -> None:
    synced: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    synchronize(torch.device("cpu"))
    synchronize(torch.device("cuda", 1))
    assert synced == [torch.device("cuda", 1)]  # cuda:1, not whatever device is current


def test_warm_up_runs_a_frame_and_names_what_failed(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    assert 0 < predictor.warm_up(64, 128) < 30

    def out_of_memory(x, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    predictor.network = out_of_memory
    with pytest.raises(WarmUpError) as info:
        predictor.warm_up(512, 1024)
    assert str(info.value) == (
        "warm-up frame 512x1024 on cpu (backend torch) failed: OutOfMemoryError: CUDA out of memory. Tried to"
        " allocate 2.00 GiB (the GPU has too little free memory for this frame size: use fp16, max_input_width"
        " or a smaller input_scale, or free the GPU)"
    )

    def no_kernel(x, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    predictor.network = no_kernel
    with pytest.raises(WarmUpError, match=r"no kernel image .*\(this torch build has no kernels for this GPU's"):
        predictor.warm_up(64, 128)


def test_release_frees_the_network_and_the_compiled_state(tiny_checkpoint: Path, monkeypatch) -> None:
    made = _replaying(monkeypatch)
    resets: list[bool] = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(True))
    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", compile_mode="default")
    predictor.predict(_image(0))
    network = weakref.ref(made.pop())
    predictor.release()
    gc.collect()
    assert network() is None and resets == [True] and not predictor.compiled
    with pytest.raises(PanopticDepthLabError, match="this predictor was released"):
        predictor.predict(_image(0))


def test_a_fixed_size_export_warms_up_at_the_size_it_takes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from panoptic_depthlab_ros.export import export_model

    export_model(tiny_checkpoint, tmp_path / "fixed.onnx", height=64, width=128)
    for input_scale, size in ((1.0, (64, 128)), (1.5, (43, 85))):
        predictor = Predictor.from_checkpoint(
            tmp_path / "fixed.onnx", "cpu", backend="onnxruntime", input_scale=input_scale
        )
        assert predictor.warmup_frame_size(512, 1024) == size  # the default size does not fit the export
        assert predictor.padded_size(*size) == (64, 128)
        assert predictor.warm_up(*size) > 0
        assert predictor.warmup_frame_size(*size) == size
    dynamic = Predictor.from_checkpoint(tiny_checkpoint, "cpu")
    assert dynamic.warmup_frame_size(512, 1024) == (512, 1024)
    limited = Predictor.from_checkpoint(tiny_checkpoint, "cpu", max_pixels=64 * 128)
    assert limited.warmup_frame_size(512, 1024) == (64, 128)  # larger frames would be refused anyway
    assert limited.warmup_frame_size(100, 100) == (90, 90)
