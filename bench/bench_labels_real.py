"""Label errors made by real people (CIFAR-10N): the ``labels`` check at its defaults against its peers.

Usage::

    python bench/bench_labels_real.py --cifar ../shared/datasets/cifar10-jpeg.tar.gz \\
        --labels ../shared/datasets/cifar10n-train-labels.csv.gz --cache /tmp/c96

Sets are laid out the way users have them: ``root/<noisy label>/<n>.jpg`` (symbolic links to the unpacked
CIFAR-10 training images), labelled by a CIFAR-10N column: ``aggregate`` (majority of three annotators,
≈ 9 % wrong) or ``worst`` (≈ 40 % wrong). A row is a real label error where that column differs from the
original CIFAR-10 label. File names carry no label.

For each set the check runs through the normal audit path (``datacheck.api.audit(..., checks=["labels"])``
at defaults); then, on the very same cached vectors:

* ``cleanlab``: out-of-fold scikit-learn ``LogisticRegression()`` (defaults) on the L2-normalised full
  vectors, ``cleanlab.filter.find_label_issues`` for the flagged set and self-confidence for the ranking:
  what a careful user would write by hand.
* ``datalab``: ``cleanlab.Datalab.find_issues(features=vectors)``, its kNN-based label-issue manager.
* ``random``: a random ranking; flags the true number of errors (the AP of chance = the error rate).

The check's flagged set is its ``label_issue`` findings (what the summary calls label errors); its
``ambiguous`` findings are listed for review and not counted.

Columns: average precision of the full ranking (every image scored), precision and recall of the flagged
set, flagged / true count, the share of true errors found whose suggested label is the clean label, the
check's estimate of the number of errors / true count, and seconds (the check's own time; the baselines'
fit time).
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from datacheck import api
from datacheck.checks.labels import LabelsParams, score_labels
from datacheck.context import build_context
from datacheck.params import EmbedParams


@dataclass(frozen=True)
class Row:
    set_name: str
    method: str
    n: int
    errors: int
    ap: float
    precision: float
    recall: float
    flagged_ratio: float
    suggested_ok: float
    estimate_ratio: float
    seconds: float


def build_set(table: pd.DataFrame, images: Path, root: Path, column: str, n: int, seed: int) -> pd.DataFrame:
    """Symbolic links ``root/<column label>/<i>.jpg`` to ``n`` sampled training images; the sampled rows."""
    rows = table.sample(n=n, random_state=seed).reset_index(drop=True)
    for i, row in rows.iterrows():
        folder = root / row[column]
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(images / row["file"], folder / f"{i:05d}.jpg")
    return rows


def _metrics(
    name: str, method: str, truth: dict, score: np.ndarray, flagged: np.ndarray, suggested: np.ndarray | None
) -> dict:
    err, clean = truth["error"], truth["clean"]
    hits = flagged & err
    ok = float(np.mean(suggested[hits] == clean[hits])) if suggested is not None and hits.any() else np.nan
    return {
        "set_name": name,
        "method": method,
        "n": len(err),
        "errors": int(err.sum()),
        "ap": float(average_precision_score(err, score)),
        "precision": float(hits.sum() / max(flagged.sum(), 1)),
        "recall": float(hits.sum() / max(err.sum(), 1)),
        "flagged_ratio": float(flagged.sum() / max(err.sum(), 1)),
        "suggested_ok": ok,
    }


def run_check(
    name: str, root: Path, truth: dict, params: EmbedParams, overrides: dict | None = None, method: str = ""
) -> Row:
    """The check through the audit path (flagged set, seconds) and its full ranking on the same context.

    ``overrides``: check parameters other than the defaults (e.g. ``{"pca_dims": 128}``), for comparisons.
    """
    overrides = overrides or {}
    # defaults, except that every finding is listed (max_findings only caps the list, not the decisions)
    listed = {"labels": {"max_findings": 10**6, **overrides}}
    report = api.audit(root, checks=["labels"], check_params=listed, map_method="none", **params.as_options())
    res = report.check("labels")
    index = {p: i for i, p in enumerate(truth["paths"])}
    flagged = np.zeros(len(index), dtype=bool)
    suggested = np.full(len(index), -1)
    for finding in res.findings:
        if finding.kind == "ambiguous":  # listed for review, not called a label error
            continue
        i = index[finding.files[0]]
        flagged[i] = True
        suggested[i] = truth["classes"].index(finding.extra["suggested"])
    embedded = api.embed(root, params)
    ctx = build_context(embedded.dataset, embedded.embeddings)
    scores = score_labels(ctx, LabelsParams(**overrides))
    full = np.zeros(len(index))
    full[scores.rows] = scores.score
    row = _metrics(name, method or "datacheck labels", truth, full, flagged, suggested)
    estimate = res.metrics.get("estimated_errors", res.metrics["issues"])
    return Row(**row, estimate_ratio=estimate / max(row["errors"], 1), seconds=report.timings["check_labels"])


def run_cleanlab(name: str, vectors: np.ndarray, labels: np.ndarray, truth: dict) -> Row:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    start = time.process_time()
    probs = cross_val_predict(
        LogisticRegression(max_iter=1000), vectors, labels, cv=5, method="predict_proba"
    )
    flagged = find_label_issues(labels, probs)
    seconds = time.process_time() - start
    rows = np.arange(len(labels))
    masked = probs.copy()
    masked[rows, labels] = -1
    row = _metrics(name, "cleanlab (OOF LR)", truth, 1 - probs[rows, labels], flagged, masked.argmax(1))
    return Row(**row, estimate_ratio=np.nan, seconds=seconds)


def run_datalab(name: str, vectors: np.ndarray, labels: np.ndarray, truth: dict) -> Row:
    from cleanlab import Datalab

    start = time.process_time()
    lab = Datalab(data={"label": labels.tolist()}, label_name="label", verbosity=0)
    lab.find_issues(features=vectors, issue_types={"label": {}})
    issues = lab.get_issues("label")
    seconds = time.process_time() - start
    predicted = issues["predicted_label"].to_numpy()
    row = _metrics(
        name,
        "cleanlab Datalab (kNN)",
        truth,
        1 - issues["label_score"].to_numpy(),
        issues["is_label_issue"].to_numpy(),
        predicted,
    )
    return Row(**row, estimate_ratio=np.nan, seconds=seconds)


def run_random(name: str, truth: dict, seed: int) -> Row:
    rng = np.random.default_rng(seed)
    score = rng.random(len(truth["error"]))
    flagged = score >= np.sort(score)[-int(truth["error"].sum())]
    row = _metrics(name, "random", truth, score, flagged, None)
    return Row(**row, estimate_ratio=np.nan, seconds=0.0)


def bench_set(
    name: str,
    root: Path,
    rows: pd.DataFrame,
    column: str,
    params: EmbedParams,
    variants: list[dict] | None = None,
    peers: bool = True,
) -> list[Row]:
    embedded = api.embed(root, params)  # fills the cache: the audit and the baselines share these vectors
    records = embedded.embeddings.records
    sampled = rows.iloc[[int(Path(r.path).stem) for r in records]].reset_index(drop=True)
    classes = sorted(sampled[column].unique())
    labels = np.array([classes.index(c) for c in sampled[column]])
    truth = {
        "paths": [r.path for r in records],
        "classes": classes,
        "clean": np.array([classes.index(c) for c in sampled["clean"]]),
        "error": (sampled[column] != sampled["clean"]).to_numpy(),
    }
    vectors = np.asarray(embedded.embeddings.vectors, dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = [run_check(name, root, truth, params)]
    for variant in variants or []:
        label = "datacheck labels, " + ", ".join(f"{k}={v}" for k, v in variant.items())
        out.append(run_check(name, root, truth, params, variant, label))
    if peers:
        out += [run_cleanlab(name, vectors, labels, truth), run_datalab(name, vectors, labels, truth)]
    return [*out, run_random(name, truth, seed=0)]


def print_table(rows: list[Row]) -> None:
    print(
        "| set | method | images | real errors | AP | precision | recall | flagged / true "
        "| suggested = clean | estimate / true | seconds |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.set_name} | {r.method} | {r.n} | {r.errors} | {r.ap:.3f} | {r.precision:.3f} | "
            f"{r.recall:.3f} | {r.flagged_ratio:.2f} | {r.suggested_ok:.2f} | {r.estimate_ratio:.2f} | "
            f"{r.seconds:.1f} |"
        )
    frame = pd.DataFrame([r.__dict__ for r in rows])
    frame["kind"] = frame["set_name"].str.replace(r"-s\d+$", "", regex=True)
    means = frame.groupby(["kind", "method"], sort=False)[["ap", "flagged_ratio", "suggested_ok", "seconds"]]
    print("\nMeans over seeds:\n\n| sets | method | AP | flagged / true | suggested = clean | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for (kind, method), m in means.mean().iterrows():
        print(
            f"| {kind} | {method} | {m.ap:.3f} | {m.flagged_ratio:.2f} | {m.suggested_ok:.2f} | "
            f"{m.seconds:.1f} |"
        )


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", type=Path, default=Path("../shared/datasets/cifar10-jpeg.tar.gz"))
    parser.add_argument(
        "--labels", type=Path, default=Path("../shared/datasets/cifar10n-train-labels.csv.gz")
    )
    parser.add_argument("--cache", type=Path, required=True, help="bottleneck cache (reused across runs)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument(
        "--seeds", type=int, default=3, help="sampling seeds of the 3,000-image aggregate sets"
    )
    parser.add_argument("--quick", action="store_true", help="only the 3,000-image aggregate sets")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="also run the check with these parameters (repeatable), e.g. pca_dims=128",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip cleanlab and Datalab")
    parser.add_argument("--all-train", action="store_true", help="also all 47,000 annotated training images")
    args = parser.parse_args()
    variants = [
        {k: _number(v) for k, v in (item.split("=", 1) for item in spec.split(","))} for spec in args.variant
    ]
    table = pd.read_csv(args.labels)
    params = EmbedParams(cache_dir=args.cache, image_size=args.image_size)
    plan = [(f"aggregate-3000-s{s}", "aggregate", 3000, s) for s in range(args.seeds)]
    if not args.quick:
        plan += [("aggregate-10000-s0", "aggregate", 10_000, 0), ("worst-3000-s0", "worst", 3000, 0)]
    if args.all_train:
        plan += [(f"aggregate-{len(table)}", "aggregate", len(table), 0)]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-labels-real-") as tmp:
        with tarfile.open(args.cifar) as tar:
            tar.extractall(Path(tmp) / "cifar", filter="data")
        for name, column, n, seed in plan:
            root = Path(tmp) / name
            sampled = build_set(table, Path(tmp) / "cifar", root, column, n, seed)
            rows += bench_set(name, root, sampled, column, params, variants, peers=not args.no_peers)
            print(f"done {name}", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
