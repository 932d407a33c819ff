"""Rich renderings of library results for the terminal. Renders only; computes nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from datacheck.actions import Outcome, Plan, iter_plan_rows
from datacheck.api import FillResult
from datacheck.embed.cache import CacheInfo
from datacheck.report import Report


def _reason_kind(reason: str) -> str:
    """The stable head of a one-line reason ("truncated file: ..." → "truncated file")."""
    return reason.split(":", 1)[0]


def embed_summary(result: FillResult) -> Group:
    """Summary of an embed run: counts, cache hits, speed, and failures grouped by reason."""
    fill = result.fill
    table = Table(title="datacheck embed", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    total = fill.timings.get("total", 0.0)
    table.add_row("dataset", f"{result.dataset.root} ({result.dataset.layout} layout)")
    table.add_row("images embedded", f"{fill.images:,}")
    table.add_row("served from cache", f"{fill.cached:,}")
    table.add_row("computed now", f"{fill.computed:,}")
    table.add_row("model", f"{fill.model_id} @ {fill.image_size} px, runtime {fill.runtime}")
    model_s = fill.timings.get("model")
    rate = f" ({fill.computed / model_s:.0f} img/s model)" if model_s else ""
    table.add_row("time", f"{total:.1f} s{rate}")
    parts: list = [table]
    problems = result.problems
    if problems:
        by_reason = Counter(f"{p.kind}: {_reason_kind(p.reason)}" for p in problems)
        failures = Table(title=f"{len(problems)} files not embedded", title_justify="left")
        failures.add_column("reason")
        failures.add_column("files", justify="right")
        failures.add_column("example")
        for reason, count in by_reason.most_common():
            example = next(p.path for p in problems if f"{p.kind}: {_reason_kind(p.reason)}" == reason)
            failures.add_row(reason, str(count), Text(example))
        parts.append(failures)
    return Group(*parts)


def cache_info(info: CacheInfo) -> Table:
    """The cache's location, size and contents."""
    table = Table(title="datacheck cache", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("path", str(info.path))
    table.add_row("size on disk", f"{info.size_bytes / 1e6:.1f} MB")
    table.add_row("image statistics", f"{info.stats_rows:,}")
    for tag, count in sorted(info.embeddings_per_tag.items()):
        table.add_row(f"embeddings {tag}", f"{count:,}")
    return table


_STATUS_STYLE = {
    "pass": "green",
    "warn": "yellow",
    "fail": "bold red",
    "error": "bold magenta",
    "skipped": "dim",
}


def audit_summary(report: Report, written: dict[str, Path], *, enforced: bool = True) -> Group:
    """One row per check (status, headline, findings), then the gate verdict and the files written.

    ``enforced``: the command exits 1 on a failed gate; otherwise the verdict says what it *would* be.
    """
    ds = report.dataset
    table = Table(
        title=(
            f"datacheck audit · {ds['images']:,} images · {len(ds['classes'])} classes"
            f" · {ds['layout']} layout"
        ),
        title_justify="left",
    )
    table.add_column("check", style="bold")
    table.add_column("status")
    table.add_column("findings", justify="right")
    table.add_column("summary")
    for res in report.checks:
        status = str(res.status)
        table.add_row(
            res.id, Text(status, style=_STATUS_STYLE[status]), str(len(res.findings)), Text(res.summary)
        )
    failing = ", ".join(v["check"] for v in report.gate.violations)
    if enforced:
        verdict = (
            Text("gate passed", style="green")
            if report.gate.passed
            else Text(f"gate failed: {failing}", style="bold red")
        )
    else:
        verdict = (
            Text("the gate would pass (run `datacheck gate` or pass --fail-on to enforce it)", style="green")
            if report.gate.passed
            else Text(
                f"the gate would fail on: {failing} (run `datacheck gate` or pass --fail-on to enforce it)",
                style="yellow",
            )
        )
    files = Text("wrote " + ", ".join(str(p) for p in written.values()), style="dim")
    return Group(table, verdict, files)


# ------------------------------------------------------------------------------------------ apply / undo

#: Rows of a plan printed before "… and N more".
PLAN_ROWS = 50


def apply_plan(plan: Plan) -> Group:
    """The moves an apply would make (dry run), with counts and the name collisions."""
    table = Table(title=f"datacheck apply · {plan.root}", title_justify="left")
    table.add_column("action", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("to", overflow="fold")
    table.add_column("", style="yellow")
    rows = list(iter_plan_rows(plan))
    for action, file, where, remark in rows[:PLAN_ROWS]:
        table.add_row(action, Text(file), Text(where), remark)
    if len(rows) > PLAN_ROWS:
        table.add_row("…", f"and {len(rows) - PLAN_ROWS} more", "", "")
    counts = Text(
        f"{plan.count('remove')} to quarantine ({plan.quarantine}), {plan.count('relabel')} to relabel, "
        f"{len(plan.unchanged)} kept / ignored / unchanged"
    )
    parts: list = [table if rows else Text("nothing to move"), counts]
    if plan.renamed:
        renamed = f"{len(plan.renamed)} destination names were taken: those files get a -N suffix"
        parts.append(Text(renamed, style="yellow"))
    return Group(*parts)


def apply_outcome(outcome: Outcome, *, undo: bool = False) -> Group:
    """What an apply, resume or undo did, and where its journal is."""
    verb = "restored" if undo else "moved"
    style = "green" if outcome.complete else "yellow"
    line = Text(f"{verb} {outcome.moved} of {outcome.total} files", style=style)
    if outcome.already:
        line.append(f" ({outcome.already} already {'in place' if undo else 'done'})", style="dim")
    parts: list = [line]
    if outcome.conflicts:
        table = Table(title=f"{len(outcome.conflicts)} files left alone", title_justify="left")
        table.add_column("file", overflow="fold")
        table.add_column("why", overflow="fold")
        for file, reason in outcome.conflicts[:PLAN_ROWS]:
            table.add_row(Text(file), Text(reason))
        parts.append(table)
    if outcome.renamed and not undo:
        renamed = f"{len(outcome.renamed)} files got a -N suffix because the name was taken"
        parts.append(Text(renamed, style="yellow"))
    # one unbroken line each, so the path can be copied from the terminal
    parts.append(Text(f"journal: {outcome.journal}", style="dim", no_wrap=True, overflow="ignore"))
    if not undo:
        command = f"undo with: datacheck undo {outcome.journal}"
        parts.append(Text(command, style="dim", no_wrap=True, overflow="ignore"))
    return Group(*parts)


def load_report(path: Path) -> dict:
    """Read a report.json for ``diff``; a clear usage error when it is not one."""
    from datacheck.report.model import read_report

    return read_report(path)


def junit(doc: dict) -> str:
    """JUnit XML text of a report."""
    from datacheck.report.formats import to_junit

    return to_junit(doc)


def markdown(doc: dict) -> str:
    """Markdown summary of a report."""
    from datacheck.report.formats import to_markdown

    return to_markdown(doc)


def github_outputs(doc: dict, *, json_on_stdout: bool) -> None:
    """In GitHub Actions: annotations, and the Markdown summary appended to the step summary."""
    import os
    import sys

    from datacheck.report.formats import github_annotations, to_markdown

    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    stream = sys.stderr if json_on_stdout else sys.stdout  # keep stdout pure JSON when JSON was asked for
    for line in github_annotations(doc):
        stream.write(line + "\n")
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(to_markdown(doc))


def diff_summary(changes: dict) -> Group:
    """New and resolved findings and status changes between two reports."""
    table = Table(title="datacheck diff", title_justify="left")
    table.add_column("change")
    table.add_column("check")
    table.add_column("kind")
    table.add_column("message")
    for label, style in (("new", "red"), ("resolved", "green")):
        for finding in changes[label]:
            table.add_row(
                Text(label, style=style), finding["check"], finding["kind"], Text(finding["message"])
            )
    lines = [table]
    for change in changes["status_changes"]:
        lines.append(Text(f"{change['check']}: {change['before']} → {change['after']}"))
    gate = changes["gate"]
    lines.append(
        Text(f"gate: {'passed' if gate['before'] else 'failed'} → {'passed' if gate['after'] else 'failed'}")
    )
    return Group(*lines)


# ------------------------------------------------------------------------------- retrain / predict / compare

#: Rows of per-class tables and mistake lists printed before "… and N more".
TRAIN_ROWS = 30


def _seconds(timings: dict, *keys: str) -> float:
    return sum(timings.get(k, 0.0) for k in keys)


def retrain_summary(metrics: dict, files: dict[str, Path]) -> Group:
    """What ``retrain`` did: data, accuracy, per-class scores, confident mistakes, time split, files."""
    ds, bb, ev, t = metrics["dataset"], metrics["backbone"], metrics["evaluation"], metrics["timings"]
    table = Table(title="datacheck retrain", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    roles = ", ".join(f"{n:,} {role}" for role, n in ds["roles"].items())
    table.add_row(
        "dataset", Text(f"{ds['root']}: {ds['images']:,} images, {len(ds['classes'])} classes ({roles})")
    )
    table.add_row(
        "backbone",
        f"{bb['model']} @ {bb['image_size']} px; {bb['cached']:,} cached, {bb['computed']:,} embedded now",
    )
    table.add_row(
        "head", f"{metrics['training']['epochs']} epochs (best {metrics['training']['best_epoch']})"
    )
    table.add_row(
        f"{metrics['evaluated_on']} accuracy",
        Text(f"{ev['accuracy']:.2%}  (macro-F1 {ev['macro_f1']:.3f}, {ev['images']:,} images)", style="bold"),
    )
    embed = t.get("embed", 0.0)
    load = t.get("embed_model_load", 0.0)
    split = f"model load {load:.1f} s, inference {t.get('embed_model', 0.0) - load:.1f} s"
    table.add_row("time", f"{t.get('total', 0.0):.1f} s total")
    table.add_row("  embed", f"{embed:.1f} s ({split})")
    for stage in (
        "mirror",
        "train_head",
        "decode_pixels",
        "train_augmented",
        "fine_tune",
        "evaluate",
        "export",
    ):
        if stage in t:
            table.add_row(f"  {stage.replace('_', ' ')}", f"{t[stage]:.1f} s")
    parts: list = [table, _per_class_table(ev["per_class"])]
    if len(ds["classes"]) <= 12:
        parts.append(_confusion_table(ev["confusion_matrix"]))
    if metrics["mistakes"]:
        parts.append(_mistakes_table(metrics["mistakes"]))
    parts.append(Text("wrote " + ", ".join(str(p) for p in files.values()), style="dim"))
    return Group(*parts)


def _per_class_table(per_class: dict) -> Table:
    table = Table(title="per class", title_justify="left")
    for name in ("class", "precision", "recall", "F1", "images"):
        table.add_column(name, justify="left" if name == "class" else "right")
    for k, (name, row) in enumerate(per_class.items()):
        if k == TRAIN_ROWS:
            table.add_row("…", "", "", "", f"{len(per_class) - TRAIN_ROWS} more")
            break
        table.add_row(
            Text(name),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    return table


def _confusion_table(cm: dict) -> Table:
    table = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("")
    for name in cm["labels"]:
        table.add_column(Text(name[:8]), justify="right")
    for name, row in zip(cm["labels"], cm["counts"], strict=True):
        table.add_row(Text(name), *(str(v) for v in row))
    return table


def _mistakes_table(mistakes: list[dict]) -> Table:
    table = Table(title="most confidently misclassified", title_justify="left")
    for name in ("image", "label", "predicted", "confidence"):
        table.add_column(name, justify="right" if name == "confidence" else "left", overflow="fold")
    for m in mistakes[:TRAIN_ROWS]:
        table.add_row(Text(m["path"]), Text(m["label"]), Text(m["predicted"]), f"{m['confidence']:.1%}")
    return table


def predictions(doc: dict) -> Group:
    """The top-k labels per image, then the files that could not be read."""
    table = Table(title="datacheck predict", title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("top labels")
    for p in doc["predictions"]:
        top = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in p["top"])
        table.add_row(Text(p["path"]), Text(top))
    parts: list = [table]
    for f in doc["failures"]:
        parts.append(Text(f"not read: {f['path']}: {f['reason']}", style="yellow"))
    return Group(*parts)


_VERDICT_STYLE = {"helped": "bold green", "hurt": "bold red", "no detectable difference": "bold yellow"}


def _ci(block: dict, scale: float = 100.0, signed: bool = False) -> str:
    lo, hi = block["ci"]
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return f"{fmt.format(scale * block['mean'])} [{fmt.format(scale * lo)}, {fmt.format(scale * hi)}]"


def compare_summary(doc: dict) -> Group:
    """Verdict, means with confidence intervals, the test set used, and per-class changes."""
    test, settings = doc["test"], doc["settings"]
    conf = f"{settings['confidence']:.0%}"
    table = Table(title=f"datacheck compare · {settings['seeds']} seeds · {conf} CI", title_justify="left")
    for name in ("metric (%)", "BEFORE", "AFTER", "AFTER − BEFORE"):
        table.add_column(name, justify="left" if name.startswith("metric") else "right")
    for metric, block in doc["metrics"].items():
        table.add_row(
            metric.replace("_", "-") + (" *" if metric == doc["metric"] else ""),
            _ci(block["before"]),
            _ci(block["after"]),
            _ci(block["difference"], signed=True),
        )
    used = (
        f"test set: {test['source']}: {test['used']:,} images used, {test['excluded_duplicates']:,} left out "
        "as duplicates of a training image"
    )
    per_class = Table(
        title="per class (F1 change, CI not corrected for multiple classes)", title_justify="left"
    )
    for name in ("class", "images", "recall", "F1", "ΔF1 (points)", "change"):
        per_class.add_column(name, justify="left" if name in ("class", "change") else "right")
    rows = sorted(doc["per_class"], key=lambda r: r["f1"]["delta"])
    for row in rows[:TRAIN_ROWS]:
        recall, f1 = row["recall"], row["f1"]
        per_class.add_row(
            Text(row["class"]),
            str(row["support"]),
            f"{recall['before']:.3f} → {recall['after']:.3f}",
            f"{f1['before']:.3f} → {f1['after']:.3f}",
            _ci({"mean": f1["delta"], "ci": f1["ci"]}, signed=True),
            Text(row["change"], style=_VERDICT_STYLE[row["change"]].replace("bold ", "")),
        )
    verdict = Text(doc["summary"], style=_VERDICT_STYLE[doc["verdict"]])
    return Group(table, Text(used, style="dim"), per_class, verdict)


# ------------------------------------------------------------------------------------------ cifar10


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def cifar10_summary(metrics: dict) -> Group:
    """A CIFAR-10 run: test accuracy (full and leak-free), speed, devices, batch."""
    dev, batch, leaks = metrics["devices"], metrics["batch"], metrics["leaks"]
    table = Table(
        title=f"datacheck cifar10 train · {metrics['model']} · {metrics['epochs']} epochs",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("test accuracy", f"{_pct(metrics['test_accuracy'])} on {metrics['test_images']:,} images")
    excluded = metrics["test_images"] - metrics["test_images_leak_free"]
    why = f"{leaks['exact_copies_of_train_images']:,} exact copies of training images"
    if leaks["report"]:
        why += f", {leaks['named_by_report']:,} named by {leaks['report']}"
    table.add_row(
        "leak-free test accuracy",
        f"{_pct(metrics['test_accuracy_leak_free'])} on {metrics['test_images_leak_free']:,} images "
        f"({excluded:,} left out: {why})",
    )
    speed = metrics["images_per_second"]
    table.add_row(
        "training",
        f"{metrics['train_images']:,} images, {'—' if speed is None else f'{speed:,.0f}'} img/s, "
        f"{metrics['train_seconds']:.1f} s training, {metrics['wall_seconds']:.1f} s wall",
    )
    table.add_row(
        "devices",
        f"{dev['strategy']}: {dev['replicas']} replica(s) on {', '.join(dev['devices'])}"
        + (f" × {dev['workers']} workers" if dev["workers"] > 1 else "")
        + f", {dev['precision']}",
    )
    table.add_row(
        "batch",
        f"{batch['per_replica']} per replica, {batch['global']} global, peak LR "
        f"{metrics['optimizer']['peak_lr']:.4g}",
    )
    parts: list = [table]
    if metrics["resumed_from_epoch"]:
        parts.append(Text(f"resumed after epoch {metrics['resumed_from_epoch']}", style="dim"))
    return Group(*parts)


def cifar10_files(metrics: dict, metrics_path: Path | None) -> list[Text]:
    """Where a run's files are, one line each (print with ``soft_wrap=True`` so paths stay whole)."""
    if metrics_path is None:
        return [
            Text("not the chief worker: metrics, checkpoints and logs are written by the chief", style="dim")
        ]
    return [
        Text(f"wrote {metrics_path}", style="dim"),
        Text(f"tensorboard --logdir {metrics['tensorboard']}", style="dim"),
    ]
