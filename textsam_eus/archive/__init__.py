"""Annotating an archive of recorded examinations (``textsam-eus annotate``): every video or DICOM file through the
same file pipeline as ``stream``, on long-lived Ray workers, resumable, with one table over the archive.

* :mod:`.plan`     - which files an archive holds and the output folder of each (unique by construction).
* :mod:`.table`    - the archive table (``archive.csv`` / ``archive.json`` / ``archive.html``), written atomically,
  and what an earlier run into the same folder left (resume).
* :mod:`.stats`    - a sink that sums up each examination (presence, mask areas) while it is annotated.
* :mod:`.worker`   - the model worker: one engine, whole files (a plain class; :mod:`.runner` makes it a Ray actor).
* :mod:`.runner`   - the Ray side: a local instance or a cluster, the workers, retries, Ctrl-C, progress.

Imports ``stream``, ``engines``, ``model`` and ``common``, never ``train``; Ray only inside :mod:`.runner`.
"""
