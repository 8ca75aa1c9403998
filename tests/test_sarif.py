"""SARIF 2.1.0 from `check` and `diff`: validated against the parts of the OASIS schema policyc uses
(required properties, enums, minimums, no unknown properties), and against the full official schema when
POLICYC_SARIF_SCHEMA names a copy of sarif-schema-2.1.0.json (sarif-2.1/schema/ in github.com/oasis-tcs/sarif-spec;
not vendored here)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jsonschema
import pytest

from policyc.cli import main

DATA = Path(__file__).parent / "data"
LEVEL = {"enum": ["none", "note", "warning", "error"]}


def _obj(props: dict, required=()) -> dict:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


_TEXT = _obj({"text": {"type": "string"}, "markdown": {"type": "string"}}, ["text"])
_MESSAGE = {"type": "object", "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
            "properties": {"text": {"type": "string"}, "id": {"type": "string"}}, "additionalProperties": False}
_REGION = _obj({"startLine": {"type": "integer", "minimum": 1}, "startColumn": {"type": "integer", "minimum": 1},
                "endLine": {"type": "integer", "minimum": 1}, "endColumn": {"type": "integer", "minimum": 1}})
_PHYSICAL = _obj({"artifactLocation": _obj({"uri": {"type": "string", "pattern": r"^[^\s]+$"}}), "region": _REGION})
_LOCATION = _obj({"id": {"type": "integer", "minimum": -1}, "physicalLocation": _PHYSICAL, "message": _MESSAGE})
_RULE = _obj({"id": {"type": "string"}, "name": {"type": "string"}, "shortDescription": _TEXT,
              "fullDescription": _TEXT, "help": _TEXT, "helpUri": {"type": "string"},
              "defaultConfiguration": _obj({"level": LEVEL})}, ["id"])
_RESULT = _obj({"ruleId": {"type": "string"}, "ruleIndex": {"type": "integer", "minimum": -1}, "level": LEVEL,
                "message": _MESSAGE, "locations": {"type": "array", "items": _LOCATION, "minItems": 1},
                "relatedLocations": {"type": "array", "items": _LOCATION},
                "partialFingerprints": {"type": "object", "additionalProperties": {"type": "string"}},
                "properties": {"type": "object"}}, ["message", "locations"])  # GitHub needs a location
_DRIVER = _obj({"name": {"type": "string"}, "version": {"type": "string"}, "informationUri": {"type": "string"},
                "rules": {"type": "array", "items": _RULE}}, ["name"])
_NOTIFICATION = _obj({"message": _MESSAGE, "level": LEVEL}, ["message"])
_INVOCATION = _obj({"executionSuccessful": {"type": "boolean"},
                    "toolExecutionNotifications": {"type": "array", "items": _NOTIFICATION}}, ["executionSuccessful"])
SUBSET = _obj({"$schema": {"type": "string"}, "version": {"enum": ["2.1.0"]},
               "runs": {"type": "array", "items": _obj({"tool": _obj({"driver": _DRIVER}, ["driver"]),
                                                        "invocations": {"type": "array", "items": _INVOCATION},
                                                        "results": {"type": "array", "items": _RESULT}},
                                                       ["tool"])}},
              ["version", "runs"])


def _sarif(argv, capsys) -> dict:
    main(argv)
    return json.loads(capsys.readouterr().out)


def _logs(capsys, tmp_path) -> list[dict]:
    spaced = tmp_path / "with space"
    spaced.mkdir()
    shutil.copy(DATA / "check" / "planted.yaml", spaced / "planted.yaml")
    return [_sarif(["check", str(DATA / "check" / "planted.yaml"), "--format", "sarif", "--fail-on", "never"], capsys),
            _sarif(["check", str(spaced / "planted.yaml"), "--format", "sarif", "--fail-on", "never"], capsys),
            _sarif(["diff", str(DATA / "diff" / "old.yaml"), str(DATA / "diff" / "new.yaml"), "--format", "sarif"],
                   capsys),
            # the gate's verdict and any cut-short search are notifications of the run's invocation
            _sarif(["diff", str(DATA / "diff" / "old.yaml"), str(DATA / "diff" / "new.yaml"), "--format", "sarif",
                    "--no-new-access", "--max-groups", "1"], capsys),
            # namespace legacy has pods but no policy: PC008/PC009 belong to no rule
            _sarif(["check", str(DATA / "checks" / "PC003" / "pass.yaml"), "--inventory",
                    str(DATA / "verify" / "inventory.yaml"), "--format", "sarif", "--fail-on", "never"], capsys)]


def test_sarif_matches_the_schema_subset(capsys, tmp_path):
    for log in _logs(capsys, tmp_path):
        jsonschema.Draft4Validator(SUBSET).validate(log)
        run = log["runs"][0]
        rules = run["tool"]["driver"]["rules"]
        assert run["results"]
        for res in run["results"]:
            assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
            ids = [r["id"] for r in res.get("relatedLocations", [])]
            assert len(ids) == len(set(ids))


def test_gate_verdict_is_a_notification(capsys, tmp_path):
    gate = _logs(capsys, tmp_path)[3]["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["level"] for n in gate][-2:] == ["error", "error"]
    assert gate[-2]["message"]["text"].startswith("no-new-access: FAIL")
    assert "443/TCP" in gate[-1]["message"]["text"]


def test_findings_without_a_rule_point_at_the_inventory(capsys, tmp_path):
    *_, inventory = _logs(capsys, tmp_path)
    results = inventory["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"PC008", "PC009"}
    for r in results:
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"].endswith("data/verify/inventory.yaml") and loc["region"]["startLine"] == 1


def test_uris_are_uri_references(capsys, tmp_path):
    _, spaced, *_ = _logs(capsys, tmp_path)
    uri = spaced["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri.startswith("file:///") and "with%20space/planted.yaml" in uri


@pytest.mark.skipif(not os.environ.get("POLICYC_SARIF_SCHEMA"), reason="POLICYC_SARIF_SCHEMA not set")
def test_sarif_matches_the_official_schema(capsys, tmp_path):
    schema = json.loads(Path(os.environ["POLICYC_SARIF_SCHEMA"]).read_text())
    for log in _logs(capsys, tmp_path):
        jsonschema.Draft4Validator(schema).validate(log)
