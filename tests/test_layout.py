"""The package layout rules of the design card: imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "textsam_eus"

# subpackage -> subpackages of ours it may import. ``common`` (and ``stream``) use only the torch-free modules of
# ``model`` (errors, pixels, ...): test_light_modules_do_not_import_torch checks what they pull in.
ALLOWED = {
    "model": {"model"},
    "common": {"common", "model"},
    "train": {"train", "model", "common"},
    "export": {"export", "model", "common"},
    "engines": {"engines", "model", "common"},
    "stream": {"stream", "engines", "model", "common"},
}


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
