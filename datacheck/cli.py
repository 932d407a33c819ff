"""Command-line interface: parse options, call the library, print, set the exit code. Nothing else.

Heavy modules (TensorFlow, the pipeline, pandas) are imported inside commands so ``datacheck --help`` is fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from datacheck import __version__
from datacheck.console import ExitCode, console, err_console, progress_reporter, setup_logging

app = typer.Typer(
    name="datacheck",
    help="Audit image-classification datasets before you train on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Inspect or clear the bottleneck cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors and the final result.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")]
CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache", help="Cache directory (default: $DATACHECK_CACHE or ~/.cache/datacheck)."),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Backbone name (see `datacheck models`).")]
SizeOpt = Annotated[str | None, typer.Option("--image-size", help="Model input size in px, or 'auto'.")]
RuntimeOpt = Annotated[str | None, typer.Option("--runtime", help="Inference runtime: auto, litert or tf.")]
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="Local weights file for Keras Applications backbones.")
]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Images per forward pass.")]
ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", help="CSV manifest with columns path,label[,split].")
]


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


def _embed_params(model, image_size, runtime, weights, batch_size, cache):
    from datacheck.params import EmbedParams

    size = None if image_size is None else (image_size if image_size == "auto" else int(image_size))
    return EmbedParams().replace(
        model=model, image_size=size, runtime=runtime, weights=weights, batch_size=batch_size, cache_dir=cache
    )


@app.command()
def embed(
    path: Annotated[Path, typer.Argument(help="Dataset folder (or a CSV manifest).")],
    manifest: ManifestOpt = None,
    model: ModelOpt = None,
    image_size: SizeOpt = None,
    runtime: RuntimeOpt = None,
    weights: WeightsOpt = None,
    batch_size: BatchOpt = None,
    cache: CacheOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Embed every image into the bottleneck cache and summarise what was read."""
    setup_logging(quiet=quiet, verbose=verbose)
    from datacheck import api, terminal

    with ExitCode.guard():
        params = _embed_params(model, image_size, runtime, weights, batch_size, cache)
        with progress_reporter(quiet=quiet) as progress:
            result = api.embed(path, params, manifest=manifest, progress=progress)
        if not quiet:
            console.print(terminal.embed_summary(result))


def _split_ids(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command()
def audit(
    path: Annotated[Path, typer.Argument(help="Dataset folder (or a CSV manifest).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json and findings.csv.")] = Path(
        "report"
    ),
    checks: Annotated[
        str | None, typer.Option("--checks", help="Only these checks (comma-separated).")
    ] = None,
    skip: Annotated[
        str | None, typer.Option("--skip", help="Leave out these checks (comma-separated).")
    ] = None,
    fail_on: Annotated[
        str | None, typer.Option("--fail-on", help="Exit 1 when a check reaches this status: warn or fail.")
    ] = None,
    manifest: ManifestOpt = None,
    model: ModelOpt = None,
    image_size: SizeOpt = None,
    runtime: RuntimeOpt = None,
    weights: WeightsOpt = None,
    batch_size: BatchOpt = None,
    cache: CacheOpt = None,
    map_method: Annotated[
        str, typer.Option("--map", help="2-D map of the images in report.html: umap, pca or none.")
    ] = "umap",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Audit a dataset: summary table, report.json, findings.csv and report.html."""
    setup_logging(quiet=quiet, verbose=verbose)
    from datacheck import api, terminal

    if fail_on not in (None, "warn", "fail"):
        raise typer.BadParameter("--fail-on takes 'warn' or 'fail'")
    with ExitCode.guard():
        params = _embed_params(model, image_size, runtime, weights, batch_size, cache)
        with progress_reporter(quiet=quiet) as progress:
            report = api.audit(
                path,
                manifest=manifest,
                checks=_split_ids(checks),
                skip=_split_ids(skip) or (),
                fail_on=fail_on or "fail",
                progress=progress,
                map_method=map_method,
                **params.as_options(),
            )
        written = report.write(out)
        if not quiet:
            console.print(terminal.audit_summary(report, written))
    if fail_on is not None and not report.gate.passed:
        raise typer.Exit(ExitCode.GATE_FAILED)


@app.command("apply")
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
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Apply annotators' decisions: quarantine removed files, move relabelled ones. Dry run unless --yes."""
    setup_logging(quiet=quiet, verbose=verbose)
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
            plan = actions.plan(
                actions.load_decisions(decisions), actions.load_report(report_path), quarantine=quarantine
            )
            if not quiet or not yes:
                console.print(terminal.apply_plan(plan))
            if not yes:
                console.print("dry run: nothing was moved; run again with --yes to carry out this plan")
                return
            outcome = actions.execute(plan, journal=journal)
        console.print(terminal.apply_outcome(outcome))
    if not outcome.complete:
        raise typer.Exit(1)


@app.command("undo")
def undo_apply(
    journal: Annotated[Path, typer.Argument(help="The journal an apply wrote (printed by datacheck apply).")],
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Put every file an apply moved back where it was, byte-identical (also after an interrupted apply)."""
    setup_logging(quiet=quiet, verbose=verbose)
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
    """Delete every cached bottleneck and statistic (your images are never touched)."""
    from datacheck.embed.cache import Cache, default_cache_dir

    directory = cache or default_cache_dir()
    if not yes:
        typer.confirm(f"Delete everything cached in {directory}?", abort=True)
    with ExitCode.guard(), Cache(directory) as store:
        store.clear()
    err_console.print(f"cleared {directory}")


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(False)
    app()
