"""A bundle's graphs must take and give what its bundle.json says, checked when an engine loads them.

The hashes in bundle.json prove only that the files are the ones listed; a bundle whose bundle.json was edited and
rehashed (``image_size`` 512 on a 256 export, ``decoder_text.onnx`` copied over ``encoder.onnx``) would otherwise
fail inside ONNX Runtime on the first frame, or run with shapes it was not made for. Each graph's inputs and
outputs (names, order of the outputs, the inputs' sizes incl. the dynamic prompt count, the outputs' sizes where
the graph states them) are compared with the shapes bundle.json implies (S = image_size, C = embedding_shape[1],
g = its grid, h = lowres_size, T = prompt rows)::

    encoder         image (1, 3, S, S)                                  -> image_embeddings (1, C, g, g)
    decoder_text    image_embeddings (1, C, g, g), text_tokens (1, T, C) -> low_res_masks (1, 1, h, h),
                                                                           iou_predictions (1, 1)
    decoder_refine  + point_coords (1, N, 2), point_labels (1, N), N dynamic

ONNX graphs must also reference no external-data file that bundle.json does not list (and hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..model.bundle import REEXPORT, Bundle, BundleError, external_data_files

DYNAMIC = None  # a size the graph must leave open (the number of refinement prompts)
Shape = tuple  # of int | None


def expected_io(bundle: Bundle) -> dict[str, tuple[dict[str, Shape], dict[str, Shape]]]:
    """role -> (inputs name -> shape, outputs name -> shape, in the order the engines unpack them)."""
    s, (_, c, g, _), h = bundle.image_size, bundle.embedding_shape, bundle.lowres_size
    t = len(bundle.prompt_tokens)
    emb = {"image_embeddings": (1, c, g, g), "text_tokens": (1, t, c)}
    masks = {"low_res_masks": (1, 1, h, h), "iou_predictions": (1, 1)}
    return {"encoder": ({"image": (1, 3, s, s)}, {"image_embeddings": (1, c, g, g)}),
            # export --serving: the same encoder with an open batch axis, for a model server
            "encoder_batch": ({"image": (DYNAMIC, 3, s, s)}, {"image_embeddings": (DYNAMIC, c, g, g)}),
            "decoder_text": (emb, masks),
            "decoder_refine": ({**emb, "point_coords": (1, DYNAMIC, 2), "point_labels": (1, DYNAMIC)}, masks)}


def _dims(shape: Sequence[Any] | None) -> Shape | None:
    """ONNX Runtime ('num_points', None) or TensorRT (-1) dynamic sizes -> None; a graph without shape -> None."""
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else DYNAMIC for d in shape)


def _fmt(shape: Shape | None) -> str:
    return "unknown" if shape is None else "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _fits(got: Shape | None, want: Shape, is_input: bool) -> bool:
    """An input's sizes must be exactly the expected ones (static where static, open where dynamic); an output's
    size the graph leaves symbolic (ONNX shape inference could not fix it) cannot be checked here and passes."""
    if got is None:
        return not is_input
    if len(got) != len(want):
        return False
    return all(g == w or (g is None and not is_input) for g, w in zip(got, want))


def _problem(kind: str, got: list[tuple[str, Any, Any]], want: dict[str, Shape], is_input: bool) -> str | None:
    names = [n for n, _, _ in got]
    if (sorted(names) != sorted(want)) if is_input else (names != list(want)):  # outputs are unpacked in order
        return f"{kind} {names}, expected {list(want)}"
    for name, shape, dtype in got:
        if dtype is not None and dtype != "tensor(float)":
            return f"{kind[:-1]} {name} is {dtype}, expected tensor(float)"
        if not _fits(_dims(shape), want[name], is_input):
            return f"{kind[:-1]} {name} has shape {_fmt(_dims(shape))}, expected {_fmt(want[name])}"
    return None


def check_graph_io(bundle: Bundle, role: str, path: str | Path, inputs: list[tuple[str, Any, Any]],
                   outputs: list[tuple[str, Any, Any]]) -> None:
    """Raise BundleError (one line) when a graph's ``inputs``/``outputs`` ((name, shape, dtype or None) in the
    graph's order) differ from what bundle.json implies for ``role`` (the base role: "encoder", ...)."""
    want_in, want_out = expected_io(bundle)[role]
    why = _problem("inputs", inputs, want_in, True) or _problem("outputs", outputs, want_out, False)
    if why:
        raise BundleError(f"{path} does not fit bundle.json as the {role} graph: {why} (bundle.json: image_size "
                          f"{bundle.image_size}, embedding_shape {bundle.embedding_shape}, lowres_size "
                          f"{bundle.lowres_size}, {len(bundle.prompt_tokens)} prompt token(s)); the graph was "
                          f"replaced or bundle.json edited: {REEXPORT}")


def check_ort_session(bundle: Bundle, role: str, path: str | Path, sess) -> None:
    """:func:`check_graph_io` on an ONNX Runtime session (``sess.get_inputs()`` / ``get_outputs()``)."""
    check_graph_io(bundle, role, path, [(a.name, a.shape, a.type) for a in sess.get_inputs()],
                   [(a.name, a.shape, a.type) for a in sess.get_outputs()])


def check_external_data(bundle: Bundle, path: str | Path) -> None:
    """Refuse an ONNX graph that references external-data files bundle.json does not list for it (their hashes
    are checked with the bundle's other files)."""
    path = Path(path)
    listed = bundle.external_data.get(path.name, []) if isinstance(bundle.external_data, dict) else []
    unlisted = [n for n in external_data_files(path) if n not in listed]
    if unlisted:
        raise BundleError(f"{path} loads its weights from external-data file(s) {unlisted} that bundle.json does "
                          f"not list or hash (the weights could be anything); {REEXPORT}")
