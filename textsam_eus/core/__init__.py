"""The light core: small facts every layer needs, free of torch (NumPy at most), importing nothing else of ours.

``errors`` (the user-error base), ``config`` (the typed model configuration and its bounds), ``pixels`` (the one
rule that turns images into uint8 RGB), ``imports`` (the one probe of optional dependencies), ``mask_metrics``
(mask IoU and Dice), ``files`` (the one atomic write), ``hashing`` (the one file SHA-256) and ``identity`` (the
model identity the outputs name). ``model`` builds on it; ``stream`` and ``common`` use it instead of ``model``.
"""
