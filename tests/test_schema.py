"""schema.json is valid JSON Schema, and unitgen's validator agrees with the
reference implementation (jsonschema, a test-only dependency) on it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from unitgen import yamlfile
from unitgen.schema import SCHEMA_PATH, Validator, validator

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads(SCHEMA_PATH.read_text())
REFERENCE = jsonschema.Draft202012Validator(SCHEMA)

DOCUMENTS = [
    (ROOT / "examples/autoheal.yaml").read_text(),
    (ROOT / "examples/conf.yaml").read_text(),
    "web: {script: x}",
    "web: {script: x, dep: [{host: h, port: 1}]}",
    "web: {script: x, dep: [{host: h, port: 0}]}",
    "web: {script: x, dep: [{host: h}]}",
    "web: {script: x, dep: [{url: 'ftp://x'}]}",
    "web: {pname: x}",
    "web: {script: x, deps: []}",
    "web: 5",
    "version: 1\nservices: {}",
    "version: 2\nservices: {a: {script: x}}",
    "version: 1\nservices: {a: {script: x, restart_sec: 5min}}",
    "version: 1\nservices: {a: {script: x, restart_sec: soon}}",
    "version: 1\nservices: {a: {script: x, restart_sec: -1}}",
    "version: 1\nservices: {a: {exec: [], user: 5}}",
    "version: 1\nservices: {a: {exec: [x], environment: {1A: b}}}",
    "version: 1\nservices: {a: {exec: [x], environment: {A: [b]}}}",
    "version: 1\nservices: {a: {exec: [x], deps: [{tcp: 'h:1', http: 'http://x'}]}}",
    "version: 1\nservices: {a: {exec: [x], deps: [{http: 'http://x', status: [200, 2xx, 600]}]}}",
    "version: 1\nservices: {a: {exec: [x], deps: [{service: b, timeout: 3s}]}}",
    "version: 1\nservices: {a: {exec: [x], systemd: {Service: {LimitNOFILE: 5, lower: x}}}}",
    "version: 1\nservices: {a: {exec: [x], systemd: {Timer: {}}}}",
    "version: 1\nhosts: {db1: {address: 10.0.0.1}, -bad: {}}\nservices: {a: {exec: [x], host: db1}}",
    "version: 1\nx-anchors: {a: 1}\nservices: {a: {exec: [x], x-note: hi}}",
    "version: 1\nservices: {a: {exec: [x], on_dependency_loss: restart, loss_threshold: {failures: 0}}}",
]


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_unitgen_and_jsonschema_agree(index):
    text = DOCUMENTS[index]
    marked = yamlfile.load("doc.yaml", text.encode())
    plain = yaml.safe_load(text)
    ours = validator().validate(marked)
    theirs = list(REFERENCE.iter_errors(plain))
    assert bool(ours) == bool(theirs), (ours, [e.message for e in theirs])


def test_an_unknown_keyword_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        Validator({"type": "object", "dependentRequired": {"a": ["b"]}})


def test_the_models_literal_types_are_the_schemas_enums():
    from typing import get_args

    from unitgen import model

    keys = SCHEMA["$defs"]["service_keys"]["properties"]
    assert set(get_args(model.ServiceType)) == set(keys["type"]["enum"])
    assert set(get_args(model.OnLoss)) == set(keys["on_dependency_loss"]["enum"])
