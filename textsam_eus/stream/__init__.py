"""Real-time streaming: frames in, segmented overlays and masks out.

* the core, here: :mod:`.record` (one record per frame), :mod:`.pipeline` (the topology and its supervision),
  :mod:`.control`, :mod:`.supervisor`, :mod:`.summary`, :mod:`.base` (the source base class), :mod:`.outdir`,
  :mod:`.manifest`, :mod:`.overlay`, :mod:`.roi`, :mod:`.warn`;
* :mod:`.stages` - one class per stage (capture, segment, presence, draw, write) and the queues between them;
* :mod:`.sources` - what ``--source`` opens (one registry of source kinds);
* :mod:`.sinks` - the writers (one registry of sink factories, keyed by the ``--masks`` names);
* :mod:`.view` - what a person watches during a run: the browser live view and the on-screen window.

This package must stay free of torch and of the train / engine packages (``tests/test_layout.py``).
"""
