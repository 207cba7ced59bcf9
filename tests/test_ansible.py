"""The unitgen.fleet collection without systemd hosts: it builds, its module's
documentation is what its code accepts, the module fails with unitgen's own
one-line error, and the role stops before touching any host when the conf is
bad or an inventory host is missing from it.

Over SSH on real systemd hosts: tests/test_ansible_bed.py."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

import controller
from controller import BIN, COLLECTION, EXAMPLE, ROOT

pytestmark = pytest.mark.skipif(bool(controller.unavailable()), reason=controller.unavailable() or "-")


def run(argv, work: Path, timeout: float = 180, **env) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=controller.environment(work, **env), capture_output=True, text=True,
                          timeout=timeout, cwd=work)


def test_the_collection_builds_with_ansible_galaxy(tmp_path):
    result = run([str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path",
                  str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = tmp_path.glob("unitgen-fleet-*.tar.gz")
    with tarfile.open(built) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert {"plugins/modules/unitgen_apply.py", "roles/unitgen/tasks/main.yml", "roles/unitgen/defaults/main.yml",
            "roles/unitgen/meta/argument_specs.yml", "meta/runtime.yml", "FILES.json"} <= names
    assert not any("__pycache__" in n for n in names)
    assert (manifest["collection_info"]["namespace"], manifest["collection_info"]["name"]) == ("unitgen", "fleet")


def test_the_modules_documentation_is_exactly_what_it_accepts(tmp_path):
    result = run([str(BIN / "ansible-doc"), "--json", "unitgen.fleet.unitgen_apply"], tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)["unitgen.fleet.unitgen_apply"]
    options = doc["doc"]["options"]
    # the argument_spec, read from the module's own source
    import ast

    tree = ast.parse((COLLECTION / "plugins/modules/unitgen_apply.py").read_text())
    spec = next(k.value for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") ==
                "AnsibleModule" for k in n.keywords if k.arg == "argument_spec")
    accepted = {k.arg: {kw.arg: ast.literal_eval(kw.value) for kw in k.value.keywords} for k in spec.keywords}
    assert set(options) == set(accepted)
    for name, settings in accepted.items():
        assert options[name]["type"] == settings["type"], name
        assert options[name].get("default") == settings.get("default"), name
    assert {"units", "jobs", "intended", "rc", "problems"} <= set(doc["return"])
    assert doc["examples"].count("unitgen.fleet.unitgen_apply:") == 3


def run_module(tmp_path, **args) -> dict:
    """unitgen_apply on the controller itself (a conf or host that fails before systemd is asked)."""
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"unitgen.fleet.unitgen_apply": {"executable": str(BIN / "unitgen"),
                                                    "output": str(tmp_path / "out"), **args},
                   "register": "applied", "ignore_errors": True},
                  {"ansible.builtin.copy": {"content": "{{ applied | to_json }}", "dest": str(tmp_path / "r.json"),
                                            "mode": "0600"}}]}]))
    result = run([str(BIN / "ansible-playbook"), str(play)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "out").exists()  # nothing written
    return json.loads((tmp_path / "r.json").read_text())


def test_the_module_fails_with_unitgens_own_line_for_a_bad_conf(tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_text("version: 1\nservices:\n  a:\n    exec: 5\n")
    applied = run_module(tmp_path, conf=str(conf))
    assert applied["failed"] is True and applied["rc"] == 2 and applied["changed"] is False
    assert applied["msg"].startswith(f"{conf}:4:11: services.a.exec: ")
    assert applied["problems"] == [applied["msg"]]


def test_the_module_fails_with_unitgens_own_line_for_a_host_not_in_the_conf(tmp_path):
    applied = run_module(tmp_path, conf=str(ROOT / "examples/conf.yaml"), host="ghost")
    assert applied["failed"] is True and applied["rc"] == 2
    assert applied["msg"].startswith("unitgen: --host ghost: ") and "\n" not in applied["msg"]


def run_example(tmp_path, inventory: str, *extra: str) -> subprocess.CompletedProcess:
    """The example playbook on hosts nobody can reach (a closed port of 127.0.0.1): only
    what runs on the controller can succeed."""
    (tmp_path / "inventory.ini").write_text(inventory)
    return run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.ini"), str(EXAMPLE / "site.yml"),
                "-e", "unitgen_wheel=/nonexistent/unitgen-0-py3-none-any.whl", *extra], tmp_path)


UNREACHABLE = "ansible_host=127.0.0.1 ansible_port=9"


def test_the_role_stops_before_any_host_when_an_inventory_host_is_missing_from_the_conf(tmp_path):
    result = run_example(tmp_path, f"[fleet]\napp1 {UNREACHABLE}\nghost {UNREACHABLE}\ndb1 {UNREACHABLE}\n")
    assert result.returncode != 0
    said = result.stdout
    assert "inventory host ghost is not in " in said
    assert "unitgen: --host ghost: not in the conf's hosts: (app1, db1, web1)" in said
    counts = controller.recap(result.stdout)
    assert set(counts) == {"app1", "ghost", "db1"}, result.stdout
    assert all(c["unreachable"] == 0 for c in counts.values()), result.stdout  # no host was ever contacted


def test_the_role_stops_before_any_host_when_the_conf_is_bad(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("version: 1\nhosts:\n  app1: {}\nservices:\n  a:\n    host: app1\n    exec: [/bin/true]\n"
                    "    deps: [{service: nope}]\n")
    result = run_example(tmp_path, f"[fleet]\napp1 {UNREACHABLE}\n", "-e", f"unitgen_conf={conf}")
    assert result.returncode != 0
    assert f"{conf}:8:" in "".join(result.stdout.split())  # unitgen check's own FILE:LINE:COL line
    assert controller.recap(result.stdout)["app1"]["unreachable"] == 0
