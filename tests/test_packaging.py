"""The snap and systemd definitions are well-formed (snapcraft's own JSON schema)."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_snapcraft_yaml_matches_snapcrafts_schema() -> None:
    schema = json.loads((REPO / "snap" / "snapcraft.schema.json").read_text())
    snap = yaml.safe_load((REPO / "snap" / "snapcraft.yaml").read_text())
    jsonschema.validate(snap, schema)
    assert snap["apps"]["daemon"]["daemon"] == "notify"
    assert "microcloudd" in snap["apps"]["daemon"]["command"]


def test_systemd_unit_is_notify_and_runs_microcloudd() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(REPO / "systemd" / "microcloudd.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["ExecStart"].split()[0].endswith("/microcloudd")
    assert service["KillMode"] == "mixed"  # our children get SIGKILL only after microcloudd's own stop
