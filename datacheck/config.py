"""Policy configuration: ``datacheck.toml``, ``[tool.datacheck]`` in ``pyproject.toml`` or ``--config FILE``.

The file only overrides; every default lives in a params dataclass (:class:`EmbedParams`, each check's
params, :class:`GatePolicy`). Unknown keys and wrong types are errors that name the key and the file.

Layout::

    fail_on = "fail"                 # gate threshold: "warn" or "fail"
    [embed]                          # EmbedParams fields
    image_size = "auto"
    [checks]
    skip = ["representativeness"]    # or: only = ["leakage", "duplicates"]
    [checks.balance]                 # a check's params fields, plus "severity"
    min_images = 100
    severity = "warn"                # cap/raise every non-info finding of this check
    [gate]                           # limits on check metrics, declared by the checks (GatePolicy)
    max_leak_pairs = 0
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datacheck.errors import UsageError
from datacheck.gate import DEFAULT_FAIL_ON, FailOn, GatePolicy, checked_fail_on, declared_limits
from datacheck.params import EmbedParams

CONFIG_NAME = "datacheck.toml"
SEVERITY_KEY = "severity"
SEVERITIES = ("info", "warn", "fail")


class ConfigError(UsageError):
    """The configuration file is invalid (exit code 2); the message names the key and the file."""


@dataclass(frozen=True)
class Config:
    """Everything a config file can set, already validated."""

    source: Path | None = None
    fail_on: FailOn = DEFAULT_FAIL_ON
    embed: Mapping[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    check_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    severity: Mapping[str, str] = field(default_factory=dict)
    gate: GatePolicy = field(default_factory=GatePolicy)


def find_config(dataset: Path | None, explicit: Path | None = None, cwd: Path | None = None) -> Path | None:
    """The config file to use.

    ``explicit`` first, else datacheck.toml beside the dataset or in ``cwd``, else pyproject.toml in ``cwd``
    when it has a ``[tool.datacheck]`` table.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}")
        return explicit
    cwd = cwd or Path.cwd()
    for folder in ([dataset] if dataset is not None and dataset.is_dir() else []) + [cwd]:
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file() and "datacheck" in _read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def load_config(path: Path | None) -> Config:
    """Parse and validate a config file (``None`` gives the defaults)."""
    if path is None:
        return Config()
    table = _read_toml(path)
    if path.name == "pyproject.toml":
        table = table.get("tool", {}).get("datacheck", {})
    return _parse(table, path)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the configuration: {err}") from err


def _parse(table: Mapping[str, Any], path: Path) -> Config:
    from datacheck.checks import all_checks

    _no_unknown(table, {"fail_on", "embed", "checks", "gate"}, path, "")
    try:
        fail_on = checked_fail_on(table.get("fail_on", DEFAULT_FAIL_ON))
    except UsageError as err:
        raise ConfigError(f"{path}: {err}") from None
    embed = _typed_fields(table.get("embed", {}), EmbedParams, path, "embed")
    checks_table = dict(table.get("checks", {}))
    specs = all_checks()
    only = checks_table.pop("only", None)
    skip = checks_table.pop("skip", [])
    for key, ids in (("only", only or []), ("skip", skip)):
        _check_ids(ids, specs, path, f"checks.{key}")
    _no_unknown(checks_table, set(specs), path, "checks")
    params: dict[str, dict[str, Any]] = {}
    severity: dict[str, str] = {}
    for check_id, values in checks_table.items():
        values = dict(_table(values, path, f"checks.{check_id}"))
        if SEVERITY_KEY in values:
            severity[check_id] = _severity(values.pop(SEVERITY_KEY), path, f"checks.{check_id}.severity")
        params[check_id] = _typed_fields(values, specs[check_id].params_type, path, f"checks.{check_id}")
    gate_values = _gate_values(table.get("gate", {}), path)
    return Config(
        source=path,
        fail_on=fail_on,
        embed=embed,
        only=tuple(only) if only else None,
        skip=tuple(skip),
        check_params=params,
        severity=severity,
        gate=_construct(GatePolicy, gate_values, path, "gate"),
    )


def _table(value: Any, path: Path, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _no_unknown(table: Mapping[str, Any], known: set[str], path: Path, where: str) -> None:
    unknown = sorted(set(_table(table, path, where or "top level")) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{path}: unknown key '{prefix}{unknown[0]}'; valid keys here: {', '.join(sorted(known))}"
        )


def _check_ids(ids: Any, specs: Mapping[str, Any], path: Path, key: str) -> None:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ConfigError(f"{path}: {key} must be a list of check ids")
    unknown = sorted(set(ids) - set(specs))
    if unknown:
        raise ConfigError(f"{path}: {key} names unknown check '{unknown[0]}'; checks: {', '.join(specs)}")


def _severity(value: Any, path: Path, key: str) -> str:
    if value not in SEVERITIES:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(SEVERITIES)}, got {value!r}")
    return value


def _typed_fields(table: Any, params_type: type, path: Path, where: str) -> dict[str, Any]:
    """Validate keys and value types of ``table`` against the fields of a params dataclass."""
    hints = typing.get_type_hints(params_type)
    fields = {f.name for f in dataclasses.fields(params_type)}
    _no_unknown(table, fields, path, where)
    values = {}
    for name, value in table.items():
        values[name] = _coerce(value, hints[name], path, f"{where}.{name}")
    return values


def _gate_values(table: Any, path: Path) -> dict[str, Any]:
    """Validate the ``[gate]`` table's keys against the limits the checks declare (values: GatePolicy)."""
    _no_unknown(table, set(declared_limits()), path, "gate")
    return dict(table)


def _coerce(value: Any, hint: Any, path: Path, key: str) -> Any:
    """Return ``value`` if it fits ``hint`` (TOML arrays become tuples, paths become Path), else raise."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    for option in options:
        origin = typing.get_origin(option)
        if option is type(None) and value is None:
            return None
        if option is Path and isinstance(value, str):
            return Path(value)
        if origin is typing.Literal and value in typing.get_args(option):
            return value
        if origin in (tuple, list) and isinstance(value, list):
            return tuple(value)
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if (
            isinstance(option, type)
            and isinstance(value, option)
            and not (option is int and isinstance(value, bool))
        ):
            return value
    raise ConfigError(f"{path}: {key} has the wrong type: expected {_describe(hint)}, got {value!r}")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _construct(params_type: type, values: Mapping[str, Any], path: Path, where: str) -> Any:
    try:
        return params_type(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: [{where}] {err}") from err


def validate_check_params(config: Config) -> None:
    """Build every check's params once so range errors surface with the file name."""
    from datacheck.checks import all_checks

    specs = all_checks()
    for check_id, values in config.check_params.items():
        _construct(
            specs[check_id].params_type, values, config.source or Path("<config>"), f"checks.{check_id}"
        )


def _attribute_docs(params_type: type) -> dict[str, str]:
    """Field descriptions from a dataclass's Google-style ``Attributes:`` docstring section."""
    docs: dict[str, str] = {}
    lines = (params_type.__doc__ or "").splitlines()
    current = None
    in_section = False
    for line in lines:
        stripped = line.strip()
        if stripped == "Attributes:":
            in_section = True
            continue
        if not in_section or not stripped:
            continue
        name, sep, text = stripped.partition(":")
        if sep and name.isidentifier() and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = name
            docs[name] = text.strip()
        elif current:
            docs[current] += " " + stripped
    return docs


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, tuple | list | frozenset | set):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _table_lines(header: str, params: Any) -> list[str]:
    docs = _attribute_docs(type(params))
    lines = [f"[{header}]"] if header else []
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if doc := docs.get(f.name):
            lines.append(f"## {doc}")
        lines.append(f"# {f.name} = {_toml_value(value)}" if value is not None else f"# {f.name} = (unset)")
    return [*lines, ""]


def starter_config() -> str:
    """A commented datacheck.toml listing every setting with its default (``datacheck init``)."""
    from datacheck.checks import all_checks

    lines = [
        "## datacheck configuration. Each '# key = value' line shows a default: uncomment it to change it.",
        "## Command-line flags override this file. Docs: docs/configuration.md",
        "",
        '## Gate threshold: the gate fails when a check has findings of this severity: "warn" or "fail".',
        f'# fail_on = "{DEFAULT_FAIL_ON}"',
        "",
        *_table_lines("embed", EmbedParams()),
        "[checks]",
        "## only = [...] runs only these checks; skip = [...] leaves these out",
        "# skip = []",
        "",
    ]
    for check_id, spec in all_checks().items():
        lines.append(f"## {spec.description}")
        lines.append("## severity = info | warn | fail sets every non-info finding of this check")
        lines.extend(_table_lines(f"checks.{check_id}", spec.default_params()))
    lines.extend(_gate_lines())
    return "\n".join(lines)


def _gate_lines() -> list[str]:
    lines = [
        "[gate]",
        "## limits on check metrics, declared by the checks; unset: the findings' severities decide",
    ]
    for name, (check_id, limit) in declared_limits().items():
        lines.append(f"## {limit.doc} (check {check_id}, metric {limit.metric})")
        value = "(unset)" if limit.default is None else _toml_value(limit.default)
        lines.append(f"# {name} = {value}")
    return [*lines, ""]
