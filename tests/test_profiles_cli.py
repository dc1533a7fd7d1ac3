"""Profiles against the real daemon (a microcloudd process on a real socket, not initialised:
config-only profiles need just its database): the real CLI, curl and pylxd. The expansion
rules themselves, without any backend, are at the end."""

from __future__ import annotations

import json
import subprocess

import pylxd
import yaml

from microcloudd.db.records import Profile
from microcloudd.services.profile_expand import expand_config, expand_devices
from tests.fixtures.daemon import VENV_BIN, RunningDaemon


def ok(d: RunningDaemon, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([str(VENV_BIN / "microcloud"), *args], env=d.env(), capture_output=True, text=True,
                       input=stdin, timeout=120)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def error(d: RunningDaemon, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, (args, r.stdout, r.stderr)
    return r.stderr.strip()


def test_profile_commands_against_the_daemon(daemon: RunningDaemon) -> None:
    d = daemon
    assert [p["name"] for p in json.loads(ok(d, "profile", "list", "--format", "json"))] == ["default"]
    ok(d, "profile", "create", "p1", "limits.cpu=1", "--description", "first")
    ok(d, "profile", "set", "p1", "limits.memory=512MiB", "user.x=1")
    ok(d, "profile", "unset", "p1", "user.x")
    shown = yaml.safe_load(ok(d, "profile", "show", "p1"))
    assert shown == {"name": "p1", "description": "first", "config": {"limits.cpu": "1",
                                                                      "limits.memory": "512MiB"},
                     "devices": {}, "used_by": []}
    shown["config"]["limits.cpu"] = "2"
    shown["description"] = "edited"
    ok(d, "profile", "edit", "p1", stdin=yaml.safe_dump(shown))
    ok(d, "profile", "copy", "p1", "p2")
    ok(d, "profile", "rename", "p2", "p3")
    listed = yaml.safe_load(ok(d, "profile", "list", "--format", "yaml"))
    assert [(p["name"], p["description"], p["config"].get("limits.cpu")) for p in listed] == [
        ("default", "Default profile", None), ("p1", "edited", "2"), ("p3", "edited", "2")]
    table = ok(d, "profile", "list")
    assert "NAME" in table and "USED BY" in table and "| p3 " in table

    assert error(d, "profile", "delete", "default") == "Error: The 'default' profile cannot be deleted"
    assert error(d, "profile", "rename", "default", "x") == "Error: The 'default' profile cannot be renamed"
    assert error(d, "profile", "create", "p1") == "Error: Profile 'p1' already exists"
    assert error(d, "profile", "show", "nope") == "Error: Profile 'nope' not found"
    assert error(d, "profile", "set", "p1", "limits.cpu=0") == "Error: limits.cpu must be at least 1"
    assert error(d, "profile", "device", "add", "p1", "root", "disk", "path=/", "pool=nopool") == \
        "Error: Storage pool 'nopool' (device 'root') not found"
    assert error(d, "profile", "device", "remove", "p1", "eth0") == \
        "Error: Device eth0 not found in profile p1"
    assert yaml.safe_load(ok(d, "profile", "show", "p1"))["config"] == {"limits.cpu": "2",
                                                                        "limits.memory": "512MiB"}

    out = subprocess.run(["curl", "-s", "--unix-socket", str(d.socket), "http://localhost/1.0/profiles"],
                         capture_output=True, text=True, check=True).stdout
    env = json.loads(out)
    assert (env["type"], env["status_code"]) == ("sync", 200)
    assert sorted(env["metadata"]) == ["/1.0/profiles/default", "/1.0/profiles/p1", "/1.0/profiles/p3"]

    client = pylxd.Client(endpoint=str(d.socket))
    default = client.profiles.get("default")
    assert default.name == "default" and default.devices["root"]["path"] == "/" and default.used_by == []
    assert client.profiles.get("p1").config["limits.cpu"] == "2"

    for name in ("p1", "p3"):
        ok(d, "profile", "delete", name)
    assert [p["name"] for p in json.loads(ok(d, "profile", "list", "--format", "json"))] == ["default"]


def test_expansion_order_and_override() -> None:
    a = Profile(name="a", config={"limits.cpu": "1", "user.a": "a"},
                devices={"root": {"type": "disk", "path": "/", "pool": "p1", "size": "10GiB"},
                         "eth0": {"type": "nic", "network": "n1"}})
    b = Profile(name="b", config={"limits.cpu": "2"},
                devices={"root": {"type": "disk", "path": "/", "pool": "p1"}, "eth1": {"type": "nic",
                                                                                       "network": "n2"}})
    own_cfg, own_dev = {"user.a": "own"}, {"eth0": {"type": "nic", "network": "n3"}}
    assert expand_config([a, b], own_cfg) == {"limits.cpu": "2", "user.a": "own"}
    assert expand_config([b, a], {}) == {"limits.cpu": "1", "user.a": "a"}
    # a later device replaces an earlier one whole (b's root has no size), the own one beats both
    assert expand_devices([a, b], own_dev) == {"root": {"type": "disk", "path": "/", "pool": "p1"},
                                               "eth0": {"type": "nic", "network": "n3"},
                                               "eth1": {"type": "nic", "network": "n2"}}
    assert expand_devices([b, a], {})["root"]["size"] == "10GiB"
    twice = expand_devices([a, b], expand_devices([a, b], own_dev))
    assert twice == expand_devices([a, b], own_dev)  # idempotent: backends may expand an expansion
