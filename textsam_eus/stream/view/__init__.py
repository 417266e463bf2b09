"""What a person watches while a run lasts: the browser live view (:mod:`.live_view`, ``--view`` / ``--serve
[HOST:]PORT``: MJPEG and stats over HTTP, the page in :mod:`.live_page`) and the on-screen window (:mod:`.window`,
``--show``). Both are sinks of the write stage. Not to be confused with the model server (``textsam_eus.serving``).

This package must stay free of torch and of the model / engine packages.
"""
