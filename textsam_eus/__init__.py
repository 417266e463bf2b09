"""TextSAM-EUS: real-time, text-prompted Segment Anything for pancreatic tumours in endoscopic ultrasound video.

Subpackages: ``core`` (the torch-free light core: errors, config, pixels, optional imports, mask metrics,
file safety, hashing, identity),
``model`` (SAM + LoRA + text prompt learner + refinement), ``common`` (synthetic EUS phantom),
``train`` (data, losses, trainer, evaluation), ``export`` (ONNX, TensorRT), ``engines`` (torch, onnxruntime,
tensorrt, and the client of a Triton model server, behind one interface), ``serving`` (the Triton model server),
``stream`` (sources, pipeline, sinks). The ``textsam-eus`` command is ``cli.main``.
"""

__version__ = "0.1.0"
