"""TextSAM-EUS benchmarks: the scripts (``run.py``, ``stream_soak.py``, ``eus_trust.py``, ``gpu_parity.py``) and
the pieces they share.

* ``machine``: machine info, library versions, the commit, this process's memory (RSS, peaks);
* ``timing``: percentiles, the per-call timer and the measured segmenter of one row;
* ``frames``: the clip's frames (or a synthetic clip) a benchmark segments;
* ``plans``: the latency matrix as typed plans, each with the reason it is skipped;
* ``models``: models, bundles and engines (engines opened as the CLI opens them: ``textsam_eus.runs``);
* ``modes``: the model/reference and stream measurements of one row;
* ``runner``: running the plans; ``report``: results.md and latency.png;
* ``recording``: a long recording remuxed from a clip; ``rss``, ``soak_runs``, ``soak_report``: the pieces of
  ``stream_soak.py``.

The scripts run by path (``python benchmarks/run.py``) or as modules (``python -m benchmarks.run``); the tests
import them as ``from benchmarks import run``. This package is not installed with ``textsam_eus``.
"""
