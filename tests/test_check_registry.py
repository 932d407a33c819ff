"""The registry: checks declare their gate limits and report view; all_checks() refuses a mismatch."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest

import datacheck.checks as checks_pkg
from datacheck.checks import all_checks
from datacheck.checks.base import _REGISTRY, CheckResult, GateLimit, ReportView, Status, register
from datacheck.config import ConfigError, load_config, starter_config
from datacheck.gate import GatePolicy, evaluate
from datacheck.params import ParamsError


def test_every_registered_check_is_listed_and_every_listed_module_registers_its_own_id() -> None:
    assert list(all_checks()) == list(checks_pkg.CHECK_MODULES)


def test_a_check_registered_under_an_unlisted_id_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    all_checks()  # the real checks are registered
    monkeypatch.setitem(_REGISTRY, "stray", _REGISTRY["balance"])
    with pytest.raises(RuntimeError, match="stray"):
        all_checks()


def test_a_listed_module_without_its_check_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks_pkg, "CHECK_MODULES", (*checks_pkg.CHECK_MODULES, "base"))
    with pytest.raises(RuntimeError, match="base"):
        all_checks()


def test_gate_policy_limits_are_the_ones_the_checks_declare() -> None:
    declared = {limit.name for spec in all_checks().values() for limit in spec.limits}
    assert set(GatePolicy().as_dict()) == declared
    assert GatePolicy().max_leak_pairs == 0 and GatePolicy().max_duplicate_fraction is None
    assert GatePolicy(max_leak_pairs=3).limits_for("leakage")["max_leak_pairs"][1] == 3
    with pytest.raises(ParamsError, match="unknown gate limit"):
        GatePolicy(max_cats=1)
    with pytest.raises(ParamsError, match="fraction"):
        GatePolicy(max_duplicate_fraction=2.0)
    with pytest.raises(ParamsError, match="whole number"):
        GatePolicy(max_leak_pairs=1.5)


def test_a_new_checks_limit_is_enforced_and_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    @dataclasses.dataclass(frozen=True)
    class GlareParams:
        threshold: float = 0.5

    @register(
        "glare", GlareParams, limits=[GateLimit("max_glare", "glare_fraction", "max_fraction", "Glare.")]
    )
    def glare(ctx, params) -> CheckResult:  # pragma: no cover - never run, only declared
        """Images with glare."""
        raise NotImplementedError

    monkeypatch.setattr(checks_pkg, "CHECK_MODULES", (*checks_pkg.CHECK_MODULES, "glare"))
    monkeypatch.setitem(sys.modules, "datacheck.checks.glare", types.ModuleType("glare"))
    try:
        result = CheckResult("glare", Status.PASS, "some glare", {"glare_fraction": 0.3})
        assert evaluate([result]).passed  # unset: the findings decide, and there are none
        assert not evaluate([result], policy=GatePolicy(max_glare=0.2)).passed
        config = tmp_path / "datacheck.toml"
        config.write_text("[gate]\nmax_glare = 0.5\n")
        assert load_config(config).gate.max_glare == 0.5
        assert "# max_glare = (unset)" in starter_config()
        config.write_text("[gate]\nmax_glint = 0.5\n")
        with pytest.raises(ConfigError, match="max_glint"):
            load_config(config)
    finally:
        _REGISTRY.pop("glare", None)


def test_report_view_is_validated_and_reaches_report_json() -> None:
    with pytest.raises(ValueError, match="finding card"):
        ReportView(card="carousel")
    labels = all_checks()["labels"]
    assert labels.view == ReportView(card="label", neighbours=True)
    doc = CheckResult("labels", Status.PASS, "ok", view=labels.view).to_dict()
    assert doc["view"] == {"card": "label", "neighbours": True, "class_chart": False}
    assert CheckResult("x", Status.PASS, "ok").to_dict()["view"]["card"] == "generic"
