"""Parameters of ``retrain``: the head (:class:`HeadParams`) and the whole run (:class:`RetrainParams`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from datacheck.params import EmbedParams, Params, param
from datacheck.train.splits import SplitParams

#: Images per backbone pass when pixels go through the network (augmentation, fine-tuning, prediction).
PIXEL_BATCH = 64


# ------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class HeadParams(Params):
    """The classifier trained on the bottlenecks.

    Attributes:
        power_norm: Take the signed square root of each bottleneck feature before standardising (tames the
            heavy tail of post-ReLU features; +1 point on CIFAR-10, docs/benchmarks.md).
        hidden: Units of an optional ReLU hidden layer; 0 trains a plain softmax layer.
        dropout: Dropout rate before each dense layer (on the standardised bottleneck and on the hidden
            layer's output); ``None``: 0.5 with a hidden layer, none without (see :attr:`dropout_rate`).
        l2: L2 weight penalty of the dense layers.
        learning_rate: Adam learning rate.
        batch_size: Bottlenecks per step (smaller for small training sets, so that an epoch has at least 8
            steps).
        max_epochs: Upper bound on epochs; early stopping usually ends sooner.
        patience: Epochs without a lower validation loss before training stops (best weights restored).
        min_delta: Smallest drop of the validation loss that counts as lower (on easy data the loss creeps
            down by 1e-4 an epoch for a hundred epochs without changing a single prediction).
        class_weights: Weight each class by ``N / (classes × its count)`` to counter imbalance.
        label_smoothing: Cross-entropy label smoothing.
        seed: Seeds weight initialisation, dropout and shuffling.
    """

    power_norm: bool = True
    hidden: int = param(0, ge=0)
    dropout: float | None = param(None, ge=0, lt=1)
    l2: float = param(1e-3, ge=0)
    learning_rate: float = param(1e-3, gt=0)
    batch_size: int = param(256, ge=1)
    max_epochs: int = param(100, ge=1)
    patience: int = param(5, ge=1)
    min_delta: float = param(1e-3, ge=0)
    class_weights: bool = False
    label_smoothing: float = param(0.0, ge=0, lt=1)
    seed: int = 0

    @property
    def dropout_rate(self) -> float:
        """The dropout rate in effect: ``dropout``, or by default 0.5 with a hidden layer and 0 without."""
        if self.dropout is not None:
            return self.dropout
        return 0.5 if self.hidden else 0.0


@dataclass(frozen=True)
class RetrainParams(Params):
    """Everything ``retrain`` needs besides the dataset and the output folder.

    Attributes:
        embed: Backbone, image size and cache (the audit's defaults).
        split: Train / validation / test roles.
        head: The classifier on the bottlenecks.
        augment: Random crop/flip/brightness; bypasses the cache (a backbone pass per epoch).
        augment_epochs: Most augmented epochs, after the head has converged on the cached bottlenecks.
        fine_tune: Number of final backbone blocks to train too (0: backbone frozen). Slow on a CPU.
        fine_tune_epochs: Most fine-tuning epochs.
        fine_tune_learning_rate: Adam learning rate while fine-tuning.
        flip: Also train on the mirror image of every training image (its bottleneck is embedded once and
            cached) and predict with the average of an image and its mirror; the export does the same.
        top_mistakes: Confidently misclassified test images listed in the metrics.
    """

    embed: EmbedParams = field(default_factory=EmbedParams)
    split: SplitParams = field(default_factory=SplitParams)
    head: HeadParams = field(default_factory=HeadParams)
    augment: bool = False
    augment_epochs: int = param(10, ge=1)
    fine_tune: int = param(0, ge=0)
    fine_tune_epochs: int = param(3, ge=1)
    fine_tune_learning_rate: float = param(1e-4, gt=0)
    flip: bool = False
    top_mistakes: int = param(20, ge=0)
