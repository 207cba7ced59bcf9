"""Each default has one source, unitgen/defaults.py (the probe's per-attempt
timeout: the probe's own constant), and the CLI, the model and schema.json's
``default`` keywords all say the same."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import unitgen_probe
from unitgen import defaults, model
from unitgen.cli import cli
from unitgen.schema import SCHEMA_PATH

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def option_default(command: str, option: str):
    (param,) = [p for p in cli.commands[command].params if f"--{option}" in p.opts]
    return param.default


def test_the_defaults_module_imports_nothing():
    tree = ast.parse(Path(defaults.__file__).read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_the_cli_uses_the_defaults():
    assert option_default("plan", "start-time") == defaults.START_TIME
    assert option_default("apply", "wait") == defaults.APPLY_WAIT
    assert option_default("apply", "settle") == defaults.APPLY_SETTLE
    assert option_default("status", "interval") == defaults.STATUS_INTERVAL
    assert option_default("watch", "interval") == defaults.WATCH_INTERVAL
    assert option_default("watch", "restart-interval") == defaults.RESTART_INTERVAL
    assert option_default("board", "interval") == defaults.BOARD_INTERVAL
    assert option_default("board", "timeout") == defaults.BOARD_TIMEOUT
    assert option_default("board", "in-flight") == defaults.BOARD_IN_FLIGHT


def test_the_model_uses_the_defaults():
    assert model.ProbeSettings().deadline == defaults.PROBE_DEADLINE
    assert model.ProbeSettings().timeout == unitgen_probe.DEFAULT_TIMEOUT
    assert model.LossThreshold() == model.LossThreshold(defaults.LOSS_FAILURES, defaults.LOSS_SECONDS)
    service = model.Service("a", ("/bin/true",), "a")
    assert service.restart_sec == defaults.RESTART_SEC and service.on_dependency_loss == "ignore"


def test_the_schema_says_the_defaults():
    keys = SCHEMA["$defs"]["service_keys"]["properties"]
    probe = SCHEMA["$defs"]["probe"]["properties"]
    loss = SCHEMA["$defs"]["loss_threshold"]["properties"]
    assert keys["restart_sec"]["default"] == defaults.RESTART_SEC
    assert keys["on_dependency_loss"]["default"] == model.Service.on_dependency_loss
    assert probe["deadline"]["default"] == defaults.PROBE_DEADLINE
    assert probe["timeout"]["default"] == unitgen_probe.DEFAULT_TIMEOUT
    assert loss["failures"]["default"] == defaults.LOSS_FAILURES
    assert loss["seconds"]["default"] == defaults.LOSS_SECONDS
    assert SCHEMA["$defs"]["dep_wait_at_most"]["default"] == defaults.OPTIONAL_WAIT


def test_a_conf_that_says_nothing_gets_the_defaults(tmp_path):
    from unitgen import config

    path = tmp_path / "conf.yaml"
    path.write_text("version: 1\nservices:\n  a:\n    exec: [/bin/true]\n")
    service = config.load(str(path)).services["a"]
    assert service.probe == model.ProbeSettings() and service.loss_threshold == model.LossThreshold()
    assert service.restart_sec == defaults.RESTART_SEC
