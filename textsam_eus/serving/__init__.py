"""Serving the model to many streams: a Triton Inference Server (PyTriton) model, ``textsam-eus serve``."""
