"""Command-line interface: parse options, call the library, print, set the exit code. Nothing else.

Heavy modules (TensorFlow, the pipeline, pandas) are imported inside commands so ``datacheck --help`` is fast.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer

from datacheck import __version__
from datacheck.cli_options import (
    PATH_HELP,
    CacheOpt,
    Cifar10Flags,
    EmbedFlags,
    FormatInOpt,
    HeadFlags,
    LogFlags,
    ManifestOpt,
    RayFlags,
    TableFormatOpt,
    given,
    with_bundles,
)
from datacheck.console import ExitCode, console, err_console, progress_reporter

app = typer.Typer(
    name="datacheck",
    help="Audit image-classification datasets before you train on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Inspect or clear the bottleneck cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"datacheck {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Audit image-classification datasets before you train on them."""


@app.command()
@with_bundles
def embed(
    path: Annotated[str, typer.Argument(help=PATH_HELP)],
    manifest: ManifestOpt = None,
    format_in: FormatInOpt = None,
    embedding: EmbedFlags = EmbedFlags(),
    cluster: RayFlags = RayFlags(),
    log: LogFlags = LogFlags(),
) -> None:
    """Embed every image into the bottleneck cache and summarise what was read."""
    log.setup()
    from datacheck import api, terminal

    with ExitCode.guard():
        params = embedding.params().replace(**cluster.given())
        with progress_reporter(quiet=log.quiet) as progress:
            result = api.fill_cache(
                path, params, manifest=manifest, progress=progress, **given(format_in=format_in)
            )
        if not log.quiet:
            console.print(terminal.embed_summary(result))


def _split_ids(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for report.json, findings.csv, report.html.")
]
ChecksOpt = Annotated[str | None, typer.Option("--checks", help="Only these checks (comma-separated).")]
SkipOpt = Annotated[str | None, typer.Option("--skip", help="Leave out these checks (comma-separated).")]
FailOnOpt = Annotated[
    str | None, typer.Option("--fail-on", help="Fail the gate on findings of this severity: warn or fail.")
]
MapOpt = Annotated[
    str | None,
    typer.Option("--map", help="2-D map of the images in report.html: umap (default), pca or none."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Policy file (default: datacheck.toml beside the dataset or here, "
        "or \\[tool.datacheck] in ./pyproject.toml).",
    ),
]
BaselineOpt = Annotated[
    Path | None, typer.Option("--baseline", help="Earlier report.json: fail only on findings new since it.")
]
JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="Write a JUnit XML file (one testcase per check).")
]
FormatOpt = Annotated[
    Literal["table", "json", "markdown"],
    typer.Option("--format", "-f", help="What to print on stdout: table, json or markdown."),
]


ReferenceOpt = Annotated[
    Path | None,
    typer.Option(
        "--reference",
        help="Folder of images like those the application will see (any layout, no labels needed), "
        "compared with the dataset by the representativeness check.",
    ),
]


@dataclass(frozen=True)
class _AuditOptions:
    """What ``audit`` and ``gate`` were asked to do (the two commands share every option)."""

    path: str
    out: Path
    checks: str | None
    skip: str | None
    fail_on: str | None
    config: Path | None
    baseline: Path | None
    junit: Path | None
    output_format: str
    manifest: Path | None
    format_in: str | None
    reference: Path | None
    map_method: str | None
    quiet: bool


def _audit_and_report(opts: _AuditOptions, embed_options: dict[str, object], *, enforced: bool) -> bool:
    """Shared body of ``audit`` and ``gate``: run, write files, print; return whether the gate passed.

    ``enforced``: whether this command exits 1 when the gate fails (``gate``, or ``audit --fail-on``).
    """
    from datacheck import api, terminal
    from datacheck import config as config_mod

    local = Path(opts.path)
    config_path = config_mod.find_config(local if local.is_dir() else None, opts.config)
    with progress_reporter(quiet=opts.quiet or opts.output_format != "table") as progress:
        report = api.audit(
            opts.path,
            manifest=opts.manifest,
            checks=_split_ids(opts.checks),
            skip=_split_ids(opts.skip) or (),
            fail_on=opts.fail_on,
            config=config_path,
            baseline=opts.baseline,
            reference=opts.reference,
            progress=progress,
            out=opts.out,
            **given(map_method=opts.map_method, format_in=opts.format_in),
            **embed_options,  # only the flags given: the config's [embed] table fills the rest
        )
    written = report.write(opts.out)
    doc = report.to_dict()
    if opts.junit is not None:
        opts.junit.parent.mkdir(parents=True, exist_ok=True)
        opts.junit.write_text(terminal.junit(doc), encoding="utf-8")
    terminal.github_outputs(doc, json_on_stdout=opts.output_format == "json")
    if opts.output_format == "json":
        sys.stdout.write(report.to_json() + "\n")
    elif opts.output_format == "markdown":
        sys.stdout.write(terminal.markdown(doc))
    elif not opts.quiet:
        console.print(terminal.audit_summary(report, written, enforced=enforced))
    return report.gate.passed


def _audit_command(gate: bool) -> Callable[..., None]:
    """``audit`` (``gate=False``: the gate is enforced only with --fail-on) or ``gate`` (always enforced)."""

    @with_bundles
    def command(
        path: Annotated[str, typer.Argument(help=PATH_HELP)],
        out: OutOpt = Path("report"),
        checks: ChecksOpt = None,
        skip: SkipOpt = None,
        fail_on: FailOnOpt = None,
        config: ConfigOpt = None,
        baseline: BaselineOpt = None,
        junit: JunitOpt = None,
        output_format: FormatOpt = "table",
        manifest: ManifestOpt = None,
        format_in: FormatInOpt = None,
        reference: ReferenceOpt = None,
        map_method: MapOpt = None,
        embedding: EmbedFlags = EmbedFlags(),
        cluster: RayFlags = RayFlags(),
        log: LogFlags = LogFlags(),
    ) -> None:
        log.setup()
        enforced = gate or fail_on is not None
        opts = _AuditOptions(
            path, out, checks, skip, fail_on, config, baseline, junit, output_format, manifest, format_in,
            reference, map_method, log.quiet,
        )  # fmt: skip
        with ExitCode.guard():
            options = {**embedding.given(), **cluster.given()}
            passed = _audit_and_report(opts, options, enforced=enforced)
        if enforced and not passed:
            raise typer.Exit(ExitCode.GATE_FAILED)

    return command


app.command(
    "audit",
    help="Audit a dataset: summary, report.json, findings.csv, report.html. With --fail-on, also a gate.",
)(_audit_command(gate=False))
app.command(
    "gate",
    help="Pre-training gate: audit + policy. Exit 0 passed, 1 failed, 2 usage error, 3 unreadable dataset.",
)(_audit_command(gate=True))


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path("datacheck.toml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter datacheck.toml with every setting and its default."""
    from datacheck.config import starter_config

    if path.exists() and not force:
        err_console.print(f"[bold red]error:[/] {path} exists; pass --force to overwrite it")
        raise typer.Exit(ExitCode.USAGE)
    path.write_text(starter_config(), encoding="utf-8")
    err_console.print(f"wrote {path}")


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="Earlier report.json.")],
    new: Annotated[Path, typer.Argument(help="Later report.json.")],
    output_format: TableFormatOpt = "table",
) -> None:
    """Show what changed between two reports: new and resolved findings, status changes."""
    from datacheck import terminal
    from datacheck.report.formats import diff_reports

    with ExitCode.guard():
        changes = diff_reports(terminal.load_report(old), terminal.load_report(new))
    _show(changes, output_format, lambda: terminal.diff_summary(changes))


@app.command("apply")
@with_bundles
def apply_decisions(
    decisions: Annotated[
        Path | None, typer.Argument(help="decisions.json exported from report.html.", show_default=False)
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="The report.json the decisions were made on (default: beside them)."),
    ] = None,
    quarantine: Annotated[
        Path | None,
        typer.Option(
            "--quarantine", help="Folder for removed files (default: <root>.datacheck-quarantine next to it)."
        ),
    ] = None,
    journal: Annotated[Path | None, typer.Option("--journal", help="Journal file to write.")] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Finish an interrupted apply from its journal.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Carry out the plan (default: dry run).")] = False,
    log: LogFlags = LogFlags(),
) -> None:
    """Apply annotators' decisions: quarantine removed files, move relabelled ones. Dry run unless --yes."""
    log.setup()
    from datacheck import actions, terminal

    if (decisions is None) == (resume is None):
        raise typer.BadParameter("give either DECISIONS or --resume JOURNAL")
    with ExitCode.guard():
        if resume is not None:
            if not yes:
                console.print(f"would finish the apply journalled in {resume}; run again with --yes")
                return
            outcome = actions.resume(resume)
        else:
            assert decisions is not None
            report_path = report or decisions.parent / "report.json"
            loaded, audited = actions.load_decisions(decisions), actions.load_report(report_path)
            if not actions.is_movable(audited):
                written, count = actions.write_change_list(
                    loaded, audited, decisions.with_suffix(".changes.csv")
                )
                console.print(
                    f"these images are inside {audited['dataset']['layout']} files, which apply does not "
                    f"rewrite: nothing was moved; wrote {count} changes (key, action, target) to {written}"
                )
                return
            plan = actions.plan(loaded, audited, quarantine=quarantine)
            if not log.quiet or not yes:
                console.print(terminal.apply_plan(plan))
            if not yes:
                console.print("dry run: nothing was moved; run again with --yes to carry out this plan")
                return
            outcome = actions.execute(plan, journal=journal)
        console.print(terminal.apply_outcome(outcome))
    if not outcome.complete:
        raise typer.Exit(1)


@app.command("undo")
@with_bundles
def undo_apply(
    journal: Annotated[Path, typer.Argument(help="The journal an apply wrote (printed by datacheck apply).")],
    log: LogFlags = LogFlags(),
) -> None:
    """Put every file an apply moved back where it was, byte-identical (also after an interrupted apply)."""
    log.setup()
    from datacheck import actions, terminal

    with ExitCode.guard():
        outcome = actions.undo(journal)
        console.print(terminal.apply_outcome(outcome, undo=True))
    if not outcome.complete:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """List the available backbones."""
    from datacheck.embed.backbones import available_backbones

    for spec in available_backbones():
        console.print(f"{spec.name:20s} default size {spec.default_size:4d}  dim {spec.dim}")


@cache_app.command("info")
def cache_info(cache: CacheOpt = None) -> None:
    """Show where the cache is, its size and what it holds."""
    from datacheck import terminal
    from datacheck.embed.cache import Cache, default_cache_dir

    with ExitCode.guard(), Cache(cache or default_cache_dir(), readonly=True) as store:
        console.print(terminal.cache_info(store.info()))


@cache_app.command("clear")
def cache_clear(
    cache: CacheOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every cached bottleneck, statistic, derived and CIFAR-10 array (images are never touched)."""
    from datacheck.embed.cache import Cache, default_cache_dir

    directory = cache or default_cache_dir()
    if not yes:
        typer.confirm(f"Delete everything cached in {directory}?", abort=True)
    with ExitCode.guard(), Cache(directory) as store:
        store.clear()
    err_console.print(f"cleared {directory}")


# ------------------------------------------------------------------------------- retrain / predict / compare


def _print_json(doc: dict) -> None:
    import json

    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _show(doc: dict, output_format: str, render: Callable[[], object], *, quiet: bool = False) -> None:
    """The result: JSON on stdout with ``--format json``, else its rendering (nothing with ``--quiet``)."""
    if output_format == "json":
        _print_json(doc)
    elif not quiet:
        console.print(render())


@app.command()
@with_bundles
def retrain(
    path: Annotated[Path, typer.Argument(help="Dataset folder (or a CSV manifest).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for model.keras, labels.txt, metrics.json.")
    ] = Path("model"),
    manifest: ManifestOpt = None,
    augment: Annotated[
        bool, typer.Option("--augment", help="Random crop/flip/brightness. Slower: bypasses the cache.")
    ] = False,
    fine_tune: Annotated[
        int | None,
        typer.Option("--fine-tune", help="Also train the last N backbone blocks. Much slower on CPU."),
    ] = None,
    output_format: TableFormatOpt = "table",
    embedding: EmbedFlags = EmbedFlags(),
    training: HeadFlags = HeadFlags(),
    log: LogFlags = LogFlags(),
) -> None:
    """Train a classifier on the cached bottlenecks; export model.keras (raw images in) and its metrics."""
    log.setup()
    with ExitCode.guard():
        from datacheck import terminal
        from datacheck.train.params import RetrainParams
        from datacheck.train.retrain import retrain as run_retrain

        options = {"augment": augment or None, "fine_tune": fine_tune}
        params = training.run_params(RetrainParams, embedding, **options)
        with progress_reporter(quiet=log.quiet or output_format == "json") as progress:
            result = run_retrain(path, out, params, manifest=manifest, progress=progress)
    _show(
        result.metrics,
        output_format,
        lambda: terminal.retrain_summary(result.metrics, result.files),
        quiet=log.quiet,
    )


@app.command()
@with_bundles
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `datacheck retrain`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[
        int | None, typer.Option("--top-k", "-k", help="Labels shown per image (default 3).")
    ] = None,
    output_format: TableFormatOpt = "table",
    log: LogFlags = LogFlags(),
) -> None:
    """Classify images with an exported model: the top-k labels and their probabilities."""
    log.setup()
    with ExitCode.guard():
        from datacheck import terminal
        from datacheck.train.export import predict as run_predict

        doc = run_predict(model_dir, images, **given(top_k=top_k)).to_dict()
    _show(
        doc, output_format, lambda: terminal.predictions(doc)
    )  # the predictions are the result: never quiet


@app.command()
@with_bundles
def compare(
    before: Annotated[Path, typer.Argument(help="The dataset before the change.")],
    after: Annotated[Path, typer.Argument(help="The dataset after the change.")],
    test: Annotated[
        Path | None, typer.Option("--test", help="Test set (default: BEFORE's test images).")
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Heads trained per version.")] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Verdict metric: accuracy or macro_f1.")
    ] = None,
    keep_duplicates: Annotated[
        bool, typer.Option("--keep-duplicates", help="Keep test images that duplicate a training image.")
    ] = False,
    output_format: TableFormatOpt = "table",
    training: HeadFlags = HeadFlags(),
    embedding: EmbedFlags = EmbedFlags(),
    log: LogFlags = LogFlags(),
) -> None:
    """Did the change help? Heads on BEFORE and AFTER, several seeds, one leak-free test set, a verdict."""
    log.setup()
    with ExitCode.guard():
        from datacheck import terminal
        from datacheck.train.compare import CompareParams
        from datacheck.train.compare import compare as run_compare

        options = {"seeds": seeds, "metric": metric, "exclude_duplicates": False if keep_duplicates else None}
        params = training.run_params(CompareParams, embedding, **options)
        with progress_reporter(quiet=log.quiet or output_format == "json") as progress:
            result = run_compare(before, after, test=test, params=params, progress=progress)
    doc = result.to_dict()
    _show(doc, output_format, lambda: terminal.compare_summary(doc), quiet=log.quiet)


# ------------------------------------------------------------------------------------------ cifar10

cifar10_app = typer.Typer(help="Reference CIFAR-10 training (docs/cifar10.md).", no_args_is_help=True)
app.add_typer(cifar10_app, name="cifar10")


@cifar10_app.command("train")
@with_bundles
def cifar10_train(settings: Cifar10Flags = Cifar10Flags(), log: LogFlags = LogFlags()) -> None:
    """Train a CIFAR-10 classifier; report test accuracy on the full and the leak-free test set."""
    log.setup()
    from datacheck import terminal

    with ExitCode.guard():
        params = settings.params()
        from datacheck.train.cifar10.train import train

        with progress_reporter(quiet=log.quiet) as progress:
            result = train(params, progress=progress)
        console.print(terminal.cifar10_summary(result.metrics))
        for line in terminal.cifar10_files(result.metrics, result.metrics_path):
            console.print(line, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(False)
    app()
