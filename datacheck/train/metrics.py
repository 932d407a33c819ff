"""Classification metrics of a trained head, and the confusion matrix as a picture.

Pure numpy (no scikit-learn), so ``compare`` can compute the same numbers for thousands of bootstrap
resamples. The picture uses matplotlib when it is installed and a Pillow drawing otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Largest number of classes whose names are written along the confusion matrix picture's axes.
_MAX_LABELLED_CLASSES = 60


def one_hot(values: np.ndarray, n_classes: int) -> np.ndarray:
    """``float32[N, n_classes]`` indicator rows of class indices ``values``."""
    return np.eye(n_classes, dtype=np.float32)[values]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``int64[C, C]`` counts: row = true class, column = predicted class."""
    flat = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def prf_from_counts(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall and F1 per class from true positives, predicted and actual counts (any shape)."""
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, actual)
    f1 = _safe_div(2 * tp, predicted + actual)
    return precision, recall, f1


def macro_f1_from_counts(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes present in the evaluation set (``actual > 0``), along the last axis."""
    f1 = prf_from_counts(tp, predicted, actual)[2]
    present = np.asarray(actual) > 0
    return _safe_div((f1 * present).sum(axis=-1), present.sum(axis=-1))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true: ``int[N]`` true class indices.
        y_pred: ``int[N]`` predicted class indices.
        class_names: Name of each class index.

    Returns:
        A JSON-ready dict; macro-F1 averages the classes that occur in ``y_true``.
    """
    n_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp, predicted, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    precision, recall, f1 = prf_from_counts(tp, predicted, actual)
    total = int(cm.sum())
    return {
        "images": total,
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(macro_f1_from_counts(tp, predicted, actual)),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(actual[k]),
            }
            for k, name in enumerate(class_names)
        },
        "confusion_matrix": {"labels": list(class_names), "counts": cm.tolist()},
    }


def confident_mistakes(
    probs: np.ndarray, y_true: np.ndarray, paths: Sequence[str], class_names: Sequence[str], n: int
) -> list[dict]:
    """The ``n`` misclassified images the model was most sure about (often label errors worth a look).

    Returns:
        Dicts with ``path``, ``label``, ``predicted``, ``confidence`` (probability of the predicted class) and
        ``label_probability``, most confident first.
    """
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:n]
    return [
        {
            "path": paths[i],
            "label": class_names[int(y_true[i])],
            "predicted": class_names[int(pred[i])],
            "confidence": float(probs[i, pred[i]]),
            "label_probability": float(probs[i, y_true[i]]),
        }
        for i in order
    ]


# ------------------------------------------------------------------------------------------ the picture


def save_confusion_png(counts: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Draw the confusion matrix (cells shaded by row-normalised share, counts written) as a PNG.

    Uses matplotlib when installed, otherwise Pillow. Returns ``path``.
    """
    counts = np.asarray(counts)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _pillow_confusion(counts, class_names, path, title)
    else:
        _matplotlib_confusion(counts, class_names, path, title)
    return path


def _row_shares(counts: np.ndarray) -> np.ndarray:
    return _safe_div(counts, counts.sum(axis=1, keepdims=True))


def _matplotlib_confusion(counts: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(class_names)
    side = min(4 + 0.45 * n, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(_row_shares(counts), cmap="Blues", vmin=0, vmax=1)
    labelled = n <= _MAX_LABELLED_CLASSES
    ax.set_xticks(range(n), list(class_names) if labelled else [], rotation=90)
    ax.set_yticks(range(n), list(class_names) if labelled else [])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        shares = _row_shares(counts)
        for (r, c), v in np.ndenumerate(counts):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if shares[r, c] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _pillow_confusion(counts: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    n = len(class_names)
    cell = max(12, min(48, 720 // max(n, 1)))
    font = _font(max(8, cell // 3))
    labelled = n <= _MAX_LABELLED_CLASSES
    name_px = 8 + max((int(font.getlength(c)) for c in class_names), default=0) if labelled else 8
    top, left = name_px + 40, name_px + 30
    img = Image.new("RGB", (left + n * cell + 10, top + n * cell + 10), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 4), title or "confusion matrix (rows: true, columns: predicted)", fill="black", font=font)
    shares = _row_shares(counts)
    for (r, c), share in np.ndenumerate(shares):
        x0, y0 = left + c * cell, top + r * cell
        shade = int(255 - 200 * share)
        draw.rectangle(
            [x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline=(220, 220, 220)
        )
        if cell >= 24:
            colour = "white" if share > 0.5 else "black"
            draw.text((x0 + cell / 2, y0 + cell / 2), str(counts[r, c]), fill=colour, font=font, anchor="mm")
    if labelled:
        _pillow_axis_names(img, draw, class_names, font, left, top, cell)
    img.save(path)


def _pillow_axis_names(img, draw, class_names: Sequence[str], font, left: int, top: int, cell: int) -> None:
    from PIL import Image, ImageDraw

    for k, name in enumerate(class_names):
        draw.text((left - 6, top + k * cell + cell / 2), name, fill="black", font=font, anchor="rm")
        width = int(font.getlength(name)) + 4
        label = Image.new("RGB", (width, cell), "white")
        ImageDraw.Draw(label).text((2, cell / 2), name, fill="black", font=font, anchor="lm")
        rotated = label.rotate(90, expand=True)
        img.paste(rotated, (left + k * cell, top - 6 - rotated.height))
