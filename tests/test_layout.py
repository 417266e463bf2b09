"""The package layout rules of the design card: imports flow one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "textsam_eus"

# subpackage -> subpackages of ours it may import. ``core`` is the torch-free light core (errors, pixels, optional
# imports, mask metrics, the typed config, file safety, hashing, identity): it imports nothing of ours, and every
# layer may import it. ``common`` and ``stream`` import no ``model`` at all: test_stream_and_common_stay_free_of_torch
# checks what they pull in.
ALLOWED = {
    "core": {"core"},
    "model": {"model", "core"},
    "common": {"common", "core"},
    "train": {"train", "model", "common", "core"},
    "export": {"export", "model", "common", "core"},
    "engines": {"engines", "model", "common", "core"},
    "stream": {"stream", "engines", "common", "core"},
    "archive": {"archive", "stream", "engines", "model", "common", "core", "runs"},
    "serving": {"serving", "engines", "model", "common", "core"},
    # a run's settings and its engine: under commands, over everything a run uses
    "runs": {"runs", "stream", "engines", "export", "model", "common", "core"},
}

# the packages that need no torch (checked in a fresh interpreter): every layer may import them
LIGHT_PACKAGES = ("core", "common", "stream")


def _our_imports(path: Path) -> set[str]:
    rel = path.relative_to(PKG.parent).with_suffix("").parts  # ('textsam_eus', 'model', 'lora')
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[: len(rel) - node.level])
                target = base + (node.module.split(".") if node.module else [])
                if not node.module:  # from .. import x
                    target = [*base, *(a.name for a in node.names[:1])]
            else:
                target = (node.module or "").split(".")
            if target and target[0] == "textsam_eus" and len(target) > 1:
                found.add(target[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "textsam_eus" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_imports_flow_one_way():
    bad = []
    for sub, allowed in ALLOWED.items():
        for path in (PKG / sub).rglob("*.py"):
            extra = _our_imports(path) - allowed
            if extra:
                bad.append(f"{path.relative_to(PKG)} imports {sorted(extra)}")
    assert not bad, bad


def test_no_generic_top_level_packages():
    root = PKG.parent
    for name in ("train", "export", "stream", "engines", "model"):
        assert not (root / name / "__init__.py").exists(), f"top-level package {name!r} would pollute site-packages"


def test_torch_load_always_weights_only():
    for path in list(PKG.rglob("*.py")) + list((PKG.parent / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "load" \
                    and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "torch":
                kws = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in kws and getattr(kws["weights_only"], "value", None) is True, \
                    f"{path}: torch.load without weights_only=True"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path) -> set[str]:
    """Every module of ours ``path`` imports, at module level or inside a function, as dotted names."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:  # ``from . import transforms`` imports a module, ``from .x import y`` x
                sub = f"{prefix}.{alias.name}"
                found.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).is_file() else prefix)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("textsam_eus.") and m != me}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_inside_model():
    """Lazy imports inside functions count too: they are how the checkpoint/registry cycle used to hide."""
    graph = {_module_name(p): {m for m in _imported_modules(p) if m.startswith("textsam_eus.model.")}
             for p in (PKG / "model").rglob("*.py")}
    assert "textsam_eus.model.pretrained" in graph["textsam_eus.model.registry"]
    assert "textsam_eus.model.registry" in graph["textsam_eus.model.checkpoint"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_anywhere():
    """The whole package's module graph, function-local imports included, has no cycle (the int8 export's
    ``onnx_export`` <-> ``quantize`` was the last: their shared error and frames now live in modules of their own)."""
    graph = {_module_name(p): _imported_modules(p) for p in PKG.rglob("*.py")}
    assert "textsam_eus.export.quantize" in graph["textsam_eus.export.onnx_export"]  # a function-local import
    assert "textsam_eus.stream.pipeline" in graph["textsam_eus.commands._stream_run"]  # so is this
    assert not {m for targets in graph.values() for m in targets} - set(graph)  # every edge ends at one of ours
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


OPTIONAL_PACKAGES = {"onnxruntime", "tensorrt", "av", "ray"}


def test_optional_dependency_probes_live_in_one_module():
    """``try: import tensorrt / except ImportError`` and ``find_spec`` appear only in core/imports.py."""
    bad = []
    for path in PKG.rglob("*.py"):
        if path == PKG / "core" / "imports.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Try):
                caught = {getattr(h.type, "id", None) for h in node.handlers} | {
                    getattr(e, "id", None) for h in node.handlers if isinstance(h.type, ast.Tuple) for e in h.type.elts}
                imported = {a.name.split(".")[0] for n in node.body for sub in ast.walk(n)
                            if isinstance(sub, (ast.Import, ast.ImportFrom))
                            for a in (sub.names if isinstance(sub, ast.Import) else [ast.alias(sub.module or "")])}
                if caught & {"ImportError", "ModuleNotFoundError"} and imported & OPTIONAL_PACKAGES:
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno} probes {sorted(imported & OPTIONAL_PACKAGES)}")
            if isinstance(node, ast.Attribute) and node.attr == "find_spec":
                bad.append(f"{path.relative_to(PKG)}:{node.lineno} calls find_spec")
    assert not bad, bad


def test_commands_do_not_import_each_other():
    """Shared argument groups and helpers live in ``commands/_*.py``; a command module imports none of the others."""
    commands = {p.stem for p in (PKG / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert {"train", "evaluate", "stream", "demo"} <= commands
    bad = []
    for name in sorted(commands):
        for mod in _imported_modules(PKG / "commands" / f"{name}.py"):
            if mod.startswith("textsam_eus.commands.") and mod.rsplit(".", 1)[1] in commands:
                bad.append(f"commands/{name}.py imports {mod}")
    assert not bad, bad


def test_every_subpackage_has_its_rules():
    subs = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert "core" in subs and not (subs - set(ALLOWED) - {"commands"}), sorted(subs - set(ALLOWED))


def test_stream_and_common_stay_free_of_torch():
    """Import every module of core, stream and common in a fresh interpreter: no torch, no model, train, engines or
    export (what they import, and what those import in turn)."""
    mods = sorted(_module_name(p) for sub in LIGHT_PACKAGES for p in (PKG / sub).rglob("*.py"))
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PKG.parent, capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert {"textsam_eus.stream.pipeline", "textsam_eus.common.screen", "textsam_eus.core.config"} <= loaded
    assert {"textsam_eus.stream.sources.files", "textsam_eus.stream.sinks.coco",
            "textsam_eus.stream.view.live_view"} <= loaded  # the subfolders too
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "torchvision", "onnxruntime", "tensorrt")
                   or m.startswith(("textsam_eus.model", "textsam_eus.train", "textsam_eus.engines",
                                    "textsam_eus.export")))
    assert not heavy, heavy


def _calls(path: Path, name: str) -> list[int]:
    """Lines of ``path`` that call ``name(...)`` (a plain name or an attribute)."""
    return [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def test_one_run_policy_for_every_caller():
    """The commands and the benchmarks make a run's pipeline configuration through ``runs.RunSettings`` (the CLI's
    defaults), not by hand, and no benchmark imports a private module of the commands."""
    bench = PKG.parent / "benchmarks"
    paths = list((PKG / "commands").glob("*.py")) + list((PKG / "archive").glob("*.py")) + list(bench.glob("*.py"))
    bad = [f"{p.name}:{line} makes a PipelineConfig by hand" for p in paths for line in _calls(p, "PipelineConfig")]
    for path in bench.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("textsam_eus.commands._"):
                bad.append(f"{path.name}:{node.lineno} imports the private {node.module}")
    assert not bad, bad
    assert _calls(PKG / "runs" / "settings.py", "PipelineConfig")  # where it is made
