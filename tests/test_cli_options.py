"""Option bundles: declared once, spread into each command's options, gathered back into one object."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from datacheck.cli import app
from datacheck.cli_options import EmbedFlags, HeadFlags, with_bundles
from datacheck.params import EmbedParams

runner = CliRunner()


def _toy_app(seen: list[object]) -> typer.Typer:
    toy = typer.Typer()

    @toy.command()
    @with_bundles
    def run(name: str, count: int = 1, embedding: EmbedFlags = EmbedFlags(), head: HeadFlags = HeadFlags()):
        seen.extend([name, count, embedding, head])

    return toy


def test_bundle_fields_become_options_and_come_back_as_one_object() -> None:
    seen: list[object] = []
    result = runner.invoke(
        _toy_app(seen), ["x", "--count", "3", "--image-size", "128", "--hidden", "64", "--class-weights"]
    )
    assert result.exit_code == 0, result.output
    name, count, embedding, head = seen
    assert (name, count) == ("x", 3)
    assert embedding == EmbedFlags(image_size="128")
    assert embedding.given() == {"image_size": 128}  # unset flags are left to the library and the config
    head_params, _ = head.params()
    assert head_params.hidden == 64 and head_params.class_weights


def test_unset_flags_give_the_library_defaults() -> None:
    assert EmbedFlags().params() == EmbedParams()
    assert EmbedFlags(cache="/tmp/c").given() == {"cache_dir": "/tmp/c"}


def test_a_non_numeric_image_size_is_a_usage_error(tmp_path) -> None:
    result = runner.invoke(
        app, ["embed", str(tmp_path), "--image-size", "big", "--cache", str(tmp_path / "c")]
    )
    assert result.exit_code == 2
    assert "--image-size takes a number of pixels" in result.output


def test_every_command_sharing_a_bundle_shows_the_same_options() -> None:
    def options(*command: str) -> set[str]:
        text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
        return {word for word in text.split() if word.startswith("--")}

    embedding = {"--model", "--image-size", "--runtime", "--weights", "--batch-size", "--cache"}
    head = {"--hidden", "--dropout", "--l2", "--learning-rate", "--epochs", "--patience", "--class-weights"}
    for command in (["embed"], ["audit"], ["gate"], ["retrain"], ["compare"]):
        assert embedding <= options(*command), command
    for command in (["retrain"], ["compare"]):
        assert head <= options(*command), command
    assert {"--engine", "--address"} <= options("audit") & options("gate") & options("embed")
