"""The extras cannot clash: no ONNX Runtime flavour in the base, exactly one per flavour extra, and the README's
install command (which .ci/run runs) gets exactly one."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NAME = canonicalize_name(PROJECT["name"])
EXTRAS = PROJECT.get("optional-dependencies", {})


def _flavours(names) -> set[str]:
    return {n for n in names if n == "onnxruntime" or n.startswith("onnxruntime-")}


def _names(extras: tuple[str, ...] = ()) -> set[str]:
    """Distribution names that ``pip install .[extras]`` asks for directly, self-references (``textsam-eus[cpu]``)
    followed."""
    out: set[str] = set()
    todo, seen = [None, *extras], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra is not None and extra not in EXTRAS:
            raise AssertionError(f"unknown extra {extra!r}; extras: {sorted(EXTRAS)}")
        for line in PROJECT["dependencies"] if extra is None else EXTRAS[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == NAME:
                todo.extend(req.extras)
            else:
                out.add(canonicalize_name(req.name))
    return out


def _readme_install_extras() -> list[tuple[str, ...]]:
    """The extras of every ``pip install -e ".[...]"`` in the README, the quick start's first."""
    found = re.findall(r'pip install -e "\.\[([a-z0-9_,\-]+)\]"', (REPO / "README.md").read_text())
    return [tuple(e.split(",")) for e in found]


def test_base_has_no_onnxruntime_flavour():
    assert not _flavours(_names()), "the base dependencies must not pick an ONNX Runtime flavour: use the extras"


def test_each_flavour_has_its_extra():
    assert _flavours(_names(("cpu",))) == {"onnxruntime"}
    assert _flavours(_names(("gpu",))) == {"onnxruntime-gpu"}


def test_no_combination_of_extras_installs_two_flavours():
    """Any set of extras with at most one flavour extra (``.[gpu,dev]``, ``.[cpu,trt,dev]``, ...) gets <= 1."""
    flavour_extras = {e for e in EXTRAS if _flavours(_names((e,)))}
    assert flavour_extras == {"cpu", "gpu"}
    others = sorted(set(EXTRAS) - flavour_extras)
    for n in range(len(others) + 1):
        for combo in itertools.combinations(others, n):
            for flavour in (None, "cpu", "gpu"):
                extras = combo + ((flavour,) if flavour else ())
                got = _flavours(_names(extras))
                assert len(got) <= (1 if flavour else 0), f".[{','.join(extras)}] installs {sorted(got)}"


def test_readme_and_ci_install_exactly_one_flavour():
    commands = _readme_install_extras()
    assert commands, "the README's quick start has no pip install -e command"
    quick = commands[0]
    assert _flavours(_names(quick)) == {"onnxruntime"}, "the quick start installs the cpu flavour (the demo's engine)"
    assert "dev" in quick or "pytest" in _names(quick)
    for extras in commands:
        assert len(_flavours(_names(extras))) <= 1, extras
    ci = (REPO / ".ci" / "run").read_text()
    assert f'pip install -q -e ".[{",".join(quick)}]"' in ci, ".ci/run must run the README's install command"


@pytest.mark.skipif(os.environ.get("TEXTSAM_EUS_PIP_RESOLVE") != "1",
                    reason="pip's resolution of the whole dependency tree from the local mirror takes about a minute "
                           "per extra here (over the 30 s a test may take); set TEXTSAM_EUS_PIP_RESOLVE=1 to run it. "
                           "The static checks above cover the project's metadata")
@pytest.mark.parametrize("extras, flavour", [("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu"),
                                             ("gpu,dev", "onnxruntime-gpu")])
def test_pip_resolves_one_flavour(tmp_path, extras, flavour):
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), f"{REPO}[{extras}]"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {canonicalize_name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
    assert _flavours(names) == {flavour}, sorted(_flavours(names))
