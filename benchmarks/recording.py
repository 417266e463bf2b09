"""A long recording made of a short clip: its packets remuxed end to end (``stream_soak.py``, ``archive_ray.py``)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any


def build_long_recording(clip: Path, dest: Path, min_frames: int) -> dict[str, Any]:
    """Remux ``clip``'s video packets end to end into ``dest`` (no re-encode) until it has >= ``min_frames``
    frames, in whole loops of the clip (every loop starts on the clip's first keyframe, so each decodes alone)."""
    import av

    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        packets = [p for p in src.demux(stream) if p.dts is not None and p.size > 0]  # drop the flush packet
        if not packets:
            raise RuntimeError(f"{clip}: no video packets")
        if not packets[0].is_keyframe:
            raise RuntimeError(f"{clip}: the first packet is not a keyframe; the clip cannot be looped by remuxing")
        durations = [p.duration for p in packets if p.duration]
        step = int(round(sum(durations) / len(durations))) if durations else 1
        first = min(p.pts for p in packets if p.pts is not None)
        span = max((p.pts or 0) + (p.duration or step) for p in packets) - first  # one loop, in stream ticks
        time_base = stream.time_base
        per_loop = len(packets)
        loops = max(1, math.ceil(min_frames / per_loop))
        t = time.perf_counter()
        with av.open(str(dest), mode="w") as out:
            ostream = out.add_stream_from_template(stream)
            for k in range(loops):
                shift = k * span
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts = None if p.pts is None else p.pts + shift
                    q.dts = p.dts + shift
                    q.duration = p.duration
                    q.is_keyframe = p.is_keyframe
                    q.time_base = time_base
                    q.stream = ostream
                    out.mux(q)
        info = {"path": str(dest), "source_clip": str(clip), "loops": loops, "frames": loops * per_loop,
                "frames_per_loop": per_loop, "codec": stream.codec_context.name, "size": [stream.width, stream.height],
                "fps": float(stream.average_rate) if stream.average_rate else None,
                "bytes": dest.stat().st_size, "seconds_to_build": round(time.perf_counter() - t, 3)}
    return info
