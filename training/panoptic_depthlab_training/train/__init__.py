r"""Train Panoptic-DepthLab: the write-up's depth-only recipe or all branches jointly.

    panoptic-depthlab-training train --config CFG.yaml --data ROOT --out DIR \
        [--iters N] [--resume] [section.key=value ...]
    torchrun --nproc_per_node=G -m panoptic_depthlab_training.cli train ...   # DDP

Modes:
* ``depth-only`` (the write-up): start from Detectron2 Panoptic-DeepLab weights, freeze
  the backbone and the semantic and instance branches, train the depth branch.
* ``joint``: every branch, Detectron2's WarmupPolyLR schedule, SyncBatchNorm under DDP.

Outputs in ``--out``: ``last_state.pt`` (everything ``--resume`` needs: model, optimizer,
scheduler, AMP scaler, per-rank RNG states, iteration; written atomically every
``checkpoint.period`` iterations and at the end), ``model_iter_XXXXXXX.safetensors`` /
``model_final.safetensors`` in the core's format (``Predictor.from_checkpoint`` loads
them), ``tensorboard/``, ``log.txt``, ``config.yaml`` and ``metrics.jsonl``.

One job per module: :mod:`.config` (the typed config, bound from YAML and overrides),
:mod:`.model` (the network to train, which parts learn), :mod:`.optim` (optimizer, LR
schedule, precision, accumulation), :mod:`.data` (dataset check, sampler, loader),
:mod:`.state` (the run's folder: resume state, RNG, model files), :mod:`.report` (log,
TensorBoard, sample panels), :mod:`.loop` (:func:`train`), :mod:`.command` (the CLI).
Joining a torchrun job is :mod:`panoptic_depthlab_training.distributed`.
"""

from .config import TrainConfig, TrainingError, load_config
from .loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "load_config", "train"]
