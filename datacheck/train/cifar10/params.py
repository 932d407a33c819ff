"""Validated parameters of a CIFAR-10 training run; every default lives here once.

Model-specific training recipes (batch size, epochs, learning rate, …) live in
:data:`datacheck.train.cifar10.models.RECIPES`; the fields below that default to ``None`` mean "the
recipe's value".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datacheck.params import Params, ParamsError, param

ModelName = Literal["resnet9", "small"]
Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
Gpus = int | Literal["all"]

MODELS: tuple[str, ...] = ("resnet9", "small")
PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True, slots=True)
class TrainParams(Params):
    """What to train, on which data and devices, and where to write the results.

    Attributes:
        data: A folder with ``train/<class>/`` and ``test/<class>/``, or a ``cifar-10-batches-py`` folder
            (or a folder holding one). ``None`` requires ``download``.
        download: Fetch the CIFAR-10 python batches with Keras' downloader (needs internet).
        model: ``"resnet9"`` (fast residual net, GPU) or ``"small"`` (plain CNN, CPU in minutes).
        epochs: Passes over the training set; ``None``: the model's recipe.
        batch_size: Images per replica per step; the global batch is ``batch_size × replicas``.
            ``None``: the model's recipe.
        lr: Peak learning rate for one replica at the recipe's batch size; the applied peak is
            ``lr × global_batch / recipe_batch`` (linear scaling rule). ``None``: the recipe's.
        gpus: ``0`` CPU only, ``N`` the first N GPUs, ``"all"`` every visible GPU (the CPU when none).
        cpu_replicas: Split the CPU into this many logical devices and mirror over them (``gpus=0`` only;
            exercises the synchronous multi-replica path without a GPU).
        multi_worker: Use ``MultiWorkerMirroredStrategy`` configured by the ``TF_CONFIG`` environment
            variable.
        precision: ``"auto"``: mixed precision on GPUs (bfloat16 from compute capability 8.0, float16 with
            loss scaling before), float32 on the CPU.
        sync_bn: Synchronise batch-norm statistics across replicas (only matters with several replicas).
        augment: Random crop (pad 4, reflect) and horizontal flip on the training images.
        tta: Average the predictions of each test image and its mirror image.
        exclude_leaks: A ``report.json`` whose ``leakage`` findings name test images duplicated in another
            split; accuracy is reported on the full test set and on the test set without them.
        limit: Use at most this many images of each split, evenly over the classes (quick runs, tests).
        out: Folder for checkpoints, ``metrics.json`` and the TensorBoard logs.
        resume: Continue the run whose checkpoint is in ``out``.
        cache_dir: Where decoded arrays are cached; ``None``: next to the bottleneck cache.
        seed: Seed of the weight initialisation, the shuffling and the augmentation.
    """

    data: Path | None = None
    download: bool = False
    model: ModelName = param("resnet9", choices=MODELS)
    epochs: int | None = param(None, ge=1)
    batch_size: int | None = param(None, ge=1)
    lr: float | None = param(None, gt=0)
    gpus: Gpus = "all"
    cpu_replicas: int = param(1, ge=1)
    multi_worker: bool = False
    precision: Precision = param("auto", choices=PRECISIONS)
    sync_bn: bool = True
    augment: bool = True
    tta: bool = True
    exclude_leaks: Path | None = None
    limit: int | None = param(None, ge=1)
    out: Path = Path("runs/cifar10")
    resume: bool = False
    cache_dir: Path | None = None
    seed: int = 0

    def relations(self) -> list[str]:
        """One data source; ``gpus`` is ``"all"`` or a count; CPU replicas only alone on the CPU."""
        several = self.cpu_replicas > 1
        return [
            "give either a data folder or download=True (--data DIR or --download)"
            if (self.data is None) == (not self.download)
            else "",
            f"gpus must be 'all' or an integer ≥ 0, got {self.gpus!r}"
            if self.gpus != "all" and not (isinstance(self.gpus, int) and self.gpus >= 0)
            else "",
            "cpu_replicas > 1 splits the CPU and needs gpus=0 (--gpus 0)"
            if several and self.gpus != 0
            else "",
            "cpu_replicas cannot be combined with multi_worker" if several and self.multi_worker else "",
        ]


def parse_gpus(text: str) -> Gpus:
    """``"all"`` or a non-negative integer, from the command line.

    Raises:
        ParamsError: Anything else.
    """
    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise ParamsError(f"--gpus takes 'all' or a number ≥ 0, got {text!r}") from None
    if value < 0:
        raise ParamsError(f"--gpus takes 'all' or a number ≥ 0, got {text!r}")
    return value
