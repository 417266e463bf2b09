"""Synthetic endoscopic-ultrasound (EUS) phantom with exact tumour masks.

Used by the tests, the demo and as extra training data.  Depends on numpy and
cv2 only and imports nothing else from ``textsam_eus``.

Model of image formation
------------------------
*Geometry.*  A curved-array probe sits at the apex ``(ax, ay)`` (top centre,
slightly above the image).  Beams leave it at angles ``theta`` in
``[-fan_angle/2, fan_angle/2]`` (0 = straight down) and are sampled from the
near radius ``r0`` to the far radius ``r1``.  Everything acoustic is computed
on this polar grid ``(nr, nt)`` (rows = depth along a beam, columns = beam
angle) and resampled once onto the ``(H, W)`` screen; outside the fan the
screen is black.

*Anatomy* lives in "world" coordinates (screen pixels at t = 0).  Probe motion
is a smooth rotation about the apex plus a small translation, mapping screen
pixel ``p`` to world point ``w(p, t)``.  The echogenicity ``E(w)`` is
  - tissue: a few regions of different echogenicity obtained by soft-thresholding
    a coarse random field, with bright interfaces between regions, times a
    medium-scale texture field;
  - lesion (the tumour = the mask): a star-shaped region whose radius is
    ``R (1 + sum_k a_k cos(k phi + phi_k))``, k = 2..12, hypoechoic
    (``lesion_contrast`` x tissue) with a heterogeneous interior; harmonics
    drift smoothly in time for clips;
  - vessels (anechoic curved tubes = arcs of large circles, bright walls) and
    cysts (anechoic ellipses), placed clear of the lesion; never in the mask.
Shapes have a compact ~1 px smooth edge; the mask is the exact hard shape
(``distance < radius``) evaluated on the screen grid, restricted to the fan.

*Propagation.*  Along each beam, the attenuation of everything above a sample
is accumulated (cumulative sum along depth): lesions cast a posterior acoustic
shadow (``shadow_strength`` = loss behind a full diameter), cysts a posterior
enhancement, vessels a mild one.  A global depth attenuation with
a partial TGC compensation, ``exp(-alpha d) (1 + 0.5 d)`` (``d`` = normalised
depth), and a bright near-field band are applied.

*Speckle.*  Complex Gaussian scatterer noise is low-pass filtered with an
anisotropic Gaussian PSF (short axially, long laterally = along arcs); its
magnitude is Rayleigh distributed and spatially correlated.  Clips mix a
persistent field with fresh noise per frame.

*Display.*  Envelope = E x speckle x attenuation, log-compressed over
``dynamic_range_db`` to 8 bits, replicated to RGB.  Screen overlays (depth
ticks along the fan edge, date/time, probe frequency, gain, a logo box) are
drawn outside the fan only and are never part of the mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ..core.errors import OptionError

__all__ = ["PhantomConfig", "PhantomClip", "make_phantom", "make_phantom_dataset", "fan_mask", "fan_geometry"]

_RANGES = {  # name: (low, high) inclusive bounds for scalar fields
    "p_lesion": (0.0, 1.0), "p_vessel": (0.0, 1.0), "p_cyst": (0.0, 1.0),
    "lesion_irregularity": (0.0, 0.5), "fan_angle": (30.0, 150.0),
    "apex_offset": (0.0, 0.5), "near_radius": (0.0, 0.5), "far_radius": (0.3, 2.0),
    "dynamic_range_db": (10.0, 120.0), "speckle_persistence": (0.0, 1.0),
    "motion_amplitude": (0.0, 0.1), "motion_rotation_deg": (0.0, 15.0),
    "deformation": (0.0, 1.0),
}
_PAIRS = {  # name: (low, high) bounds for (lo, hi) tuple fields
    "lesion_radius": (0.01, 0.4), "lesion_contrast": (0.0, 1.0),
    "shadow_strength": (0.0, 0.95), "attenuation": (0.0, 5.0),
    "speckle_sigma": (0.3, 10.0),
}


@dataclass
class PhantomConfig:
    """Knobs of the phantom.  Fractions are of the image height unless noted."""

    height: int = 256
    width: int = 256
    p_lesion: float = 1.0
    p_vessel: float = 0.5
    p_cyst: float = 0.3
    overlays: bool = True
    lesion_radius: tuple[float, float] = (0.08, 0.18)  # fraction of min(height, width)
    lesion_irregularity: float = 0.35        # bound on the sum of shape-harmonic amplitudes
    lesion_contrast: tuple[float, float] = (0.2, 0.45)  # lesion / tissue echogenicity
    shadow_strength: tuple[float, float] = (0.4, 0.8)   # intensity loss behind a full diameter
    fan_angle: float = 75.0                  # degrees, full angular span
    apex_offset: float = 0.06                # apex height above the image top
    near_radius: float = 0.1                 # r0 (from the apex)
    far_radius: float = 1.0                  # r1, shrunk if needed so the fan fits the width
    attenuation: tuple[float, float] = (1.8, 2.6)  # net depth attenuation (nepers over the fan)
    dynamic_range_db: float = 50.0
    speckle_sigma: tuple[float, float] = (0.7, 2.4)  # PSF sigma (axial, lateral) in polar samples
    speckle_persistence: float = 0.7         # clips: complex-field correlation frame to frame
    motion_amplitude: float = 0.02           # clips: translation amplitude, fraction of min(H, W)
    motion_rotation_deg: float = 3.0         # clips: rotation amplitude about the apex
    deformation: float = 0.3                 # clips: relative drift of shape harmonics
    max_vessels: int = 2

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> OptionError:
            return OptionError(f"PhantomConfig.{name} {why}, got {getattr(self, name)!r}")

        for name in ("height", "width", "max_vessels"):
            v = getattr(self, name)
            lo = 0 if name == "max_vessels" else 32
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise bad(name, f"must be an integer >= {lo}")
        if not isinstance(self.overlays, (bool, np.bool_)):
            raise bad("overlays", "must be a bool")
        for name, (lo, hi) in _RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not lo <= v <= hi:
                raise bad(name, f"must be a number in [{lo}, {hi}]")
        for name, (lo, hi) in _PAIRS.items():
            v = getattr(self, name)
            ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(
                isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in v)
            if not ok or not lo <= v[0] <= v[1] <= hi:
                raise bad(name, f"must be a pair (lo, hi) with {lo} <= lo <= hi <= {hi}")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        if self.far_radius - self.near_radius < 0.3:
            raise bad("far_radius", "must exceed near_radius by at least 0.3")
        r1 = min(self.far_radius * self.height, 0.48 * self.width / math.sin(math.radians(self.fan_angle) / 2))
        if r1 - self.near_radius * self.height < 0.25 * self.height:
            raise bad("fan_angle", f"is too wide for width {self.width} (fan too shallow)")


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _Geom:
    H: int
    W: int
    ax: float
    ay: float
    r0: float
    r1: float
    half: float
    dr: float
    dt: float
    pr: np.ndarray      # (nr,) radius of each polar row
    px: np.ndarray      # (nr, nt) screen x of polar samples
    py: np.ndarray      # (nr, nt) screen y of polar samples
    map_t: np.ndarray   # (H, W) polar column index of each screen pixel
    map_r: np.ndarray   # (H, W) polar row index of each screen pixel
    fan: np.ndarray     # (H, W) bool
    xx: np.ndarray      # (H, W) screen x
    yy: np.ndarray      # (H, W) screen y


@lru_cache(maxsize=16)
def _geometry(H: int, W: int, fan_angle: float, apex_offset: float, near: float, far: float) -> _Geom:
    half = math.radians(fan_angle) / 2
    ax, ay = (W - 1) / 2.0, -apex_offset * H
    r1 = min(far * H, 0.48 * W / math.sin(half))
    r0 = near * H
    nr = int(math.ceil(r1 - r0)) + 1
    nt = int(math.ceil(0.6 * r1 * 2 * half)) + 1
    dr, dt = (r1 - r0) / (nr - 1), 2 * half / (nt - 1)
    pr = (r0 + dr * np.arange(nr)).astype(np.float32)
    th = (-half + dt * np.arange(nt)).astype(np.float32)
    px = (ax + pr[:, None] * np.sin(th)[None]).astype(np.float32)
    py = (ay + pr[:, None] * np.cos(th)[None]).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r = np.hypot(xx - ax, yy - ay)
    t = np.arctan2(xx - ax, yy - ay)
    fan = (r >= r0) & (r <= r1) & (np.abs(t) <= half)
    arrs = [pr, px, py, ((t + half) / dt).astype(np.float32), ((r - r0) / dr).astype(np.float32), fan, xx, yy]
    for a in arrs:
        a.setflags(write=False)
    return _Geom(H, W, ax, ay, r0, r1, half, dr, dt, *arrs)


def _geom(cfg: PhantomConfig) -> _Geom:
    return _geometry(cfg.height, cfg.width, float(cfg.fan_angle), float(cfg.apex_offset),
                     float(cfg.near_radius), float(cfg.far_radius))


def fan_mask(config: PhantomConfig | None = None) -> np.ndarray:
    """(H, W) bool mask of the ultrasound fan for ``config``."""
    return _geom(config or PhantomConfig()).fan.copy()


def fan_geometry(config: PhantomConfig | None = None) -> dict[str, Any]:
    """Fan geometry in pixels: apex (x, y), near/far radii r0/r1, half_angle (radians)."""
    g = _geom(config or PhantomConfig())
    return dict(apex=(g.ax, g.ay), r0=g.r0, r1=g.r1, half_angle=g.half)


# ----------------------------------------------------------------------------- scene
_GRID = 80  # resolution of the smooth random fields covering the world box


def _smooth_fields(rng: np.random.Generator, sigmas: tuple[float, ...]) -> np.ndarray:
    out = []
    for s in sigmas:
        f = cv2.GaussianBlur(rng.standard_normal((_GRID, _GRID), dtype=np.float32), (0, 0), s,
                             borderType=cv2.BORDER_REFLECT)
        out.append((f - f.mean()) / (f.std() + 1e-6))
    return np.ascontiguousarray(np.stack(out, -1))


def _in_fan_point(rng, g: _Geom, margin: float, r_lo: float, r_hi: float) -> tuple[float, float]:
    r = rng.uniform(r_lo, max(r_lo, r_hi))
    tmax = max(0.0, g.half - margin / max(r, 1.0))
    th = rng.uniform(-tmax, tmax)
    return g.ax + r * math.sin(th), g.ay + r * math.cos(th)


def _sample_scene(rng: np.random.Generator, cfg: PhantomConfig) -> dict[str, Any]:
    g = _geom(cfg)
    S = float(min(cfg.height, cfg.width))
    sc: dict[str, Any] = {}
    lv = np.sort(rng.uniform(0.35, 1.4, 3))
    rng.shuffle(lv)
    sc["tissue"] = dict(levels=lv, thr=np.sort(rng.uniform(-0.8, 0.8, 2)),
                        iface=rng.uniform(0.5, 1.2), tex=rng.uniform(0.15, 0.3))
    sc["fields"] = _smooth_fields(rng, (6.0, 2.0, 1.2))  # coarse regions, texture, lesion interior
    sc["alpha"] = rng.uniform(*cfg.attenuation)
    sc["gain_db"] = rng.uniform(-2.0, 2.0)
    # probe motion (used by clips only): rotation about the apex + translation, two tones each
    sc["motion"] = dict(freq=rng.uniform(0.08, 0.35, (3, 2)), phase=rng.uniform(0, 2 * np.pi, (3, 2)),
                        w=rng.dirichlet([1, 1], 3))
    m = 2 * cfg.motion_amplitude * S  # worst-case translation margin
    lesion = None
    if rng.random() < cfg.p_lesion:
        R = rng.uniform(*cfg.lesion_radius) * S
        ks = np.arange(2, 13)
        a = rng.uniform(0.3, 1.0, ks.size) / ks ** 1.1
        a *= cfg.lesion_irregularity * rng.uniform(0.6, 1.0) / a.sum()
        rmax = R * (1 + a.sum() * (1 + 2 * cfg.deformation))
        rc_margin = 1.05 * rmax + m
        r_lo, r_hi = g.r0 + rc_margin + 0.04 * S, g.r1 - rc_margin - 0.5 * R
        if r_lo > r_hi:
            r_lo = r_hi = (r_lo + r_hi) / 2
        rot = math.radians(cfg.motion_rotation_deg) * 2
        cx, cy = _in_fan_point(rng, g, rc_margin + rot * r_hi, r_lo, r_hi)
        s = rng.uniform(*cfg.shadow_strength)
        lesion = dict(cx=cx, cy=cy, R=R, rmax=rmax, ks=ks, a=a, ph=rng.uniform(0, 2 * np.pi, ks.size),
                      om=rng.uniform(-0.6, 0.6, ks.size), nu=rng.uniform(0.1, 0.4, ks.size),
                      psi=rng.uniform(0, 2 * np.pi, ks.size), contrast=rng.uniform(*cfg.lesion_contrast),
                      kappa=-math.log(1 - s) / (2 * R), edge=rng.uniform(0.5, 1.2))
    sc["lesion"] = lesion

    def clear_of_lesion(x: float, y: float, extent: float) -> bool:
        return lesion is None or math.hypot(x - lesion["cx"], y - lesion["cy"]) > lesion["rmax"] + extent + 0.06 * S

    vessels: list[dict] = []
    if cfg.max_vessels > 0 and rng.random() < cfg.p_vessel:
        n = 1 + int(rng.integers(0, cfg.max_vessels))
        for j in range(60 * n):
            if len(vessels) == n:
                break
            px, py = _in_fan_point(rng, g, 0.0, g.r0 + 0.1 * S, g.r1 - 0.1 * S)
            beta, Rv, hw = rng.uniform(0, np.pi), rng.uniform(1.5, 6.0) * S, rng.uniform(0.012, 0.03) * S
            sgn = 1.0
            if lesion is not None and j >= 20:  # later tries: run tangentially, bending away from the lesion
                ux, uy = px - lesion["cx"], py - lesion["cy"]
                beta = math.atan2(uy, ux) + math.pi / 2 + rng.uniform(-0.2, 0.2)
                sgn = 1.0 if -math.sin(beta) * ux + math.cos(beta) * uy > 0 else -1.0
            cx, cy = px - sgn * Rv * math.sin(beta), py + sgn * Rv * math.cos(beta)
            if lesion is not None:
                dl = abs(math.hypot(lesion["cx"] - cx, lesion["cy"] - cy) - Rv)
                if dl < lesion["rmax"] + hw + 0.06 * S:
                    continue
            vessels.append(dict(cx=cx, cy=cy, Rv=Rv, hw=hw))
    sc["vessels"] = vessels
    cysts: list[dict] = []
    if rng.random() < cfg.p_cyst:
        for _ in range(60):
            a_ = rng.uniform(0.03, 0.07) * S
            x, y = _in_fan_point(rng, g, a_ + m, g.r0 + a_ + 0.05 * S, g.r1 - 2 * a_)
            if clear_of_lesion(x, y, a_) and all(
                    abs(math.hypot(x - v["cx"], y - v["cy"]) - v["Rv"]) > a_ + v["hw"] + 3 for v in vessels):
                cysts.append(dict(cx=x, cy=y, a=a_, b=a_ * rng.uniform(0.7, 1.0), ang=rng.uniform(0, np.pi),
                                  kappa=math.log(rng.uniform(1.8, 2.8)) / (2 * a_)))
                break
    sc["cysts"] = cysts
    sc["overlay"] = dict(date=(int(rng.integers(2018, 2026)), int(rng.integers(1, 13)), int(rng.integers(1, 29))),
                         sec=int(rng.integers(7 * 3600, 18 * 3600)), mhz=float(rng.choice([5.0, 6.0, 7.5, 10.0, 12.0])),
                         gain=int(rng.integers(40, 80)), depth=int(rng.integers(6, 11)),
                         focus=rng.uniform(0.3, 0.7), logo=str(rng.choice(["EU-ME2", "ARIETTA", "PROSND", "EG-580"])))
    return sc


# ----------------------------------------------------------------------------- rendering
def _motion(sc: dict, cfg: PhantomConfig, t: float) -> tuple[float, float, float]:
    """Rotation (rad) about the apex and translation (px) at time t; zero at t = 0."""
    if t == 0.0:
        return 0.0, 0.0, 0.0
    mo = sc["motion"]
    v = (mo["w"] * (np.sin(2 * np.pi * mo["freq"] * t + mo["phase"]) - np.sin(mo["phase"]))).sum(1)
    S = min(cfg.height, cfg.width)
    return (math.radians(cfg.motion_rotation_deg) * v[0] / 2,
            cfg.motion_amplitude * S * v[1] / 2, cfg.motion_amplitude * S * v[2] / 2)


def _to_world(x: np.ndarray, y: np.ndarray, g: _Geom, mot: tuple[float, float, float]):
    rot, tx, ty = mot
    if rot == 0.0 and tx == 0.0 and ty == 0.0:
        return x, y
    c, s = math.cos(rot), math.sin(rot)
    dx, dy = x - g.ax, y - g.ay
    return (g.ax + c * dx - s * dy + tx).astype(np.float32), (g.ay + s * dx + c * dy + ty).astype(np.float32)


def _lesion_radius(les: dict, dx: np.ndarray, dy: np.ndarray, t: float, deformation: float):
    """Distance to the lesion centre and the boundary radius in that direction (same shapes)."""
    d = np.hypot(dx, dy)
    z = ((dx + 1j * dy) / np.maximum(d, 1e-6)).astype(np.complex64)
    amp = les["a"] * (1 + deformation * (np.sin(2 * np.pi * les["nu"] * t + les["psi"]) - np.sin(les["psi"])))
    coef = (amp * np.exp(1j * (les["ph"] + les["om"] * t))).astype(np.complex64)
    zk, acc = z * z, np.zeros_like(d)
    for c in coef:
        acc += (zk * c).real
        zk = zk * z
    return d, les["R"] * np.maximum(1 + acc, 0.3)


def _ramp(e: np.ndarray, w: float) -> np.ndarray:
    """Compact smooth step: 1 for e <= -w, 0 for e >= w (e = signed distance outside a shape)."""
    x = np.clip(0.5 - e / (2 * w), 0.0, 1.0)
    return (x * x * (3 - 2 * x)).astype(np.float32)


def _shape_maps(sc: dict, cfg: PhantomConfig, wx: np.ndarray, wy: np.ndarray, t: float, soft: bool):
    """Lesion / vessel / cyst occupancy at world points; soft (float32) or hard (bool) maps."""
    out = {}
    les = sc["lesion"]
    L = np.zeros(wx.shape, np.float32)
    if les is not None:
        dx, dy = wx - les["cx"], wy - les["cy"]
        sel = (np.abs(dx) < les["rmax"] + 3) & (np.abs(dy) < les["rmax"] + 3)
        d, rad = _lesion_radius(les, dx[sel], dy[sel], t, cfg.deformation)
        L[sel] = _ramp(d - rad, les["edge"]) if soft else (d < rad)
    out["lesion"] = L
    V = np.zeros(wx.shape, np.float32)
    Vw = np.zeros(wx.shape, np.float32)
    for v in sc["vessels"]:
        e = np.abs(np.hypot(wx - v["cx"], wy - v["cy"]) - v["Rv"]) - v["hw"]
        V = np.maximum(V, _ramp(e, 0.7) if soft else (e < 0))
        if soft:
            Vw = np.maximum(Vw, np.exp(-(e - 1.0) ** 2 / 1.5) * (e > 0.7))
    out["vessels"], out["vessel_wall"] = V, Vw
    C = np.zeros(wx.shape, np.float32)
    Cw = np.zeros(wx.shape, np.float32)
    for c in sc["cysts"]:
        ca, sa = math.cos(c["ang"]), math.sin(c["ang"])
        dx, dy = wx - c["cx"], wy - c["cy"]
        e = (np.hypot((ca * dx + sa * dy) / c["a"], (-sa * dx + ca * dy) / c["b"]) - 1) * c["b"]
        C = np.maximum(C, _ramp(e, 0.7) if soft else (e < 0))
        if soft:
            Cw = np.maximum(Cw, np.exp(-(e - 1.0) ** 2 / 2.0) * (e > 0.7))
    out["cysts"], out["cyst_wall"] = C, Cw
    return out


def _speckle(rng, shape, sig, persistent=None, rho=0.0) -> np.ndarray:
    re = rng.standard_normal(shape, dtype=np.float32)
    im = rng.standard_normal(shape, dtype=np.float32)
    if persistent is not None and rho > 0:
        a, b = math.sqrt(rho), math.sqrt(1 - rho)
        re, im = a * persistent[0] + b * re, a * persistent[1] + b * im
    re = cv2.GaussianBlur(re, (0, 0), sigmaX=sig[1], sigmaY=sig[0], borderType=cv2.BORDER_REFLECT)
    im = cv2.GaussianBlur(im, (0, 0), sigmaX=sig[1], sigmaY=sig[0], borderType=cv2.BORDER_REFLECT)
    mag = np.sqrt(re * re + im * im)
    return mag / math.sqrt(float((mag * mag).mean()) + 1e-12)


def _render(sc: dict, cfg: PhantomConfig, t: float, rng: np.random.Generator,
            persistent=None, return_layers: bool = False):
    g = _geom(cfg)
    S = float(min(cfg.height, cfg.width))
    mot = _motion(sc, cfg, t)
    wx, wy = _to_world(g.px, g.py, g, mot)
    # smooth fields at world points (one 3-channel remap)
    x0, y0, span_x, span_y = -0.3 * g.W, g.ay - 0.3 * g.H, 1.6 * g.W, 1.6 * g.H
    f = cv2.remap(sc["fields"], (wx - x0) * ((_GRID - 1) / span_x), (wy - y0) * ((_GRID - 1) / span_y),
                  cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    fc, fm, fl = f[..., 0], f[..., 1], f[..., 2]
    ti = sc["tissue"]
    lv, thr = ti["levels"], ti["thr"]
    s1, s2 = (1 / (1 + np.exp(np.clip((th_ - fc) / 0.07, -30, 30))) for th_ in thr)
    E = lv[0] + (lv[1] - lv[0]) * s1 + (lv[2] - lv[1]) * s2
    E += ti["iface"] * (np.exp(-((fc - thr[0]) / 0.06) ** 2) + np.exp(-((fc - thr[1]) / 0.06) ** 2))
    E *= 1 + ti["tex"] * fm
    shp = _shape_maps(sc, cfg, wx, wy, t, soft=True)
    L, V, C = shp["lesion"], shp["vessels"], shp["cysts"]
    occ = np.zeros_like(L)
    if sc["lesion"] is not None:
        les = sc["lesion"]
        lesion_E = les["contrast"] * float(lv.mean()) * np.exp(0.6 * fl)
        E = E * (1 - L) + L * lesion_E
        occ -= les["kappa"] * L
    for c in sc["cysts"]:
        occ += c["kappa"] * C
    anech = np.maximum(V, C)
    E = (E + 1.2 * np.maximum(shp["vessel_wall"], shp["cyst_wall"])) * (1 - anech) + 0.004 * anech
    # propagation: posterior shadowing / enhancement accumulated along each beam, depth attenuation
    log_ac = np.cumsum(occ, axis=0) * g.dr
    if sc["vessels"]:  # mild enhancement behind a vessel, independent of the chord length
        log_ac += 0.15 * np.maximum.accumulate(V, axis=0)
    acoustic = np.exp(np.clip(log_ac, -4, 1.2))
    acoustic = cv2.GaussianBlur(acoustic, (0, 0), sigmaX=1.5, sigmaY=0.1)
    d = (g.pr - g.r0) / (g.r1 - g.r0)
    depth = np.exp(-sc["alpha"] * d) * (1 + 0.5 * d) + 1.5 * np.exp(-(g.pr - g.r0) / (0.015 * S))
    amp = E * acoustic * depth[:, None].astype(np.float32)
    amp *= _speckle(rng, amp.shape, cfg.speckle_sigma, persistent, cfg.speckle_persistence)
    v = 1 + (20 * np.log10(np.maximum(amp, 0) + 1e-4) - 10.0 + sc["gain_db"]) / cfg.dynamic_range_db
    polar = np.clip(v, 0, 1) ** 1.3 * 255
    grey = cv2.remap(polar.astype(np.float32), g.map_t, g.map_r, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    grey = np.where(g.fan, np.nan_to_num(grey, nan=0.0), 0).round().astype(np.uint8)
    img = np.repeat(grey[..., None], 3, axis=-1)
    # exact mask on the screen grid
    cx, cy = _to_world(g.xx, g.yy, g, mot)
    hard = _shape_maps(sc, cfg, cx, cy, t, soft=False) if return_layers else None
    if hard is None and sc["lesion"] is not None:
        hard = {"lesion": _shape_maps(dict(sc, vessels=[], cysts=[]), cfg, cx, cy, t, soft=False)["lesion"]}
    mask = ((hard["lesion"] > 0) & g.fan).astype(np.uint8) if hard is not None else np.zeros(g.fan.shape, np.uint8)
    ov = np.zeros(g.fan.shape, bool)
    if cfg.overlays:
        canvas = _draw_overlays(sc["overlay"], g, t)
        ov = canvas.any(-1) & ~g.fan
        img[ov] = canvas[ov]
    if not return_layers:
        return img, mask
    layers = dict(fan=g.fan.copy(), lesion=mask.astype(bool), vessels=(hard["vessels"] > 0) & g.fan,
                  cysts=(hard["cysts"] > 0) & g.fan, overlay=ov,
                  acoustic=np.where(g.fan, cv2.remap(acoustic, g.map_t, g.map_r, cv2.INTER_LINEAR,
                                                     borderMode=cv2.BORDER_REPLICATE), 1.0).astype(np.float32))
    return img, mask, layers


def _draw_overlays(o: dict, g: _Geom, t: float) -> np.ndarray:
    """(H, W, 3) uint8 canvas with processor-screen annotations (black = nothing)."""
    H, W = g.H, g.W
    cv = np.zeros((H, W, 3), np.uint8)
    k = min(H, W) / 256.0
    fs, th, font = max(0.25, 0.3 * k), max(1, int(round(k * 0.8))), cv2.FONT_HERSHEY_SIMPLEX
    white, yellow, green, cyan = (225, 225, 225), (235, 215, 60), (90, 225, 90), (90, 210, 235)
    sec = o["sec"] + int(t)
    lh = int(round(11 * k))

    def put(txt: str, x: int, y: int, col, right: bool = False, scale: float = 1.0):
        if right:
            x -= cv2.getTextSize(txt, font, fs * scale, th)[0][0]
        cv2.putText(cv, txt, (x, y), font, fs * scale, col, th, cv2.LINE_AA)

    y, m, d = o["date"]
    put(f"{y:04d}/{m:02d}/{d:02d}", 4, lh, white)
    put(f"{sec // 3600 % 24:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}", 4, 2 * lh, white)
    put("B-MODE", 4, 3 * lh, yellow)
    put(f"EUS {o['mhz']:.1f}MHz", W - 4, lh, cyan, right=True)
    put(f"G {o['gain']} DR 60", W - 4, 2 * lh, white, right=True)
    put(f"D {o['depth']}cm", 4, H - 6, white)
    bw, bh = int(46 * k), int(13 * k)
    cv2.rectangle(cv, (W - bw - 4, H - bh - 4), (W - 4, H - 4), white, 1)
    put(o["logo"], W - bw - 1, H - 7, white, scale=0.8)
    # depth ticks along the right fan edge, focus marker on the left edge
    sn, cs = math.sin(g.half), math.cos(g.half)
    for i in range(o["depth"] + 1):
        r = g.r0 + i * (g.r1 - g.r0) / o["depth"]
        ex, ey = g.ax + r * sn + 3 * k * cs, g.ay + r * cs - 3 * k * sn
        ln = (6 if i % 5 == 0 else 3) * k
        cv2.line(cv, (int(ex), int(ey)), (int(ex + ln * cs), int(ey - ln * sn)), green, 1)
        if i % 2 == 0 and i > 0:
            put(str(i), int(ex + 8 * k * cs), int(ey - 8 * k * sn + 3 * k), green, scale=0.8)
    r = g.r0 + o["focus"] * (g.r1 - g.r0)
    fx, fy = g.ax - r * sn - 3 * k * cs, g.ay + r * cs - 3 * k * sn
    tri = np.array([[fx, fy], [fx - 6 * k, fy - 3 * k], [fx - 6 * k, fy + 3 * k]], np.int32)
    cv2.fillConvexPoly(cv, tri, yellow)
    return cv


# ----------------------------------------------------------------------------- public API
def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def make_phantom(seed: int | np.random.Generator, config: PhantomConfig | None = None, *,
                 return_layers: bool = False):
    """One frame.

    Returns ``(image, mask)``: image uint8 (H, W, 3) RGB (grey replicated, coloured overlay
    text outside the fan), mask uint8 (H, W) in {0, 1} (the lesion, inside the fan).  With
    ``return_layers=True`` returns ``(image, mask, layers)`` where layers holds (H, W) bool
    maps 'fan', 'lesion', 'vessels', 'cysts', 'overlay' and float32 'acoustic' (posterior
    shadow < 1 / enhancement > 1 factor).
    """
    cfg = config or PhantomConfig()
    rng = _rng(seed)
    return _render(_sample_scene(rng, cfg), cfg, 0.0, rng, return_layers=return_layers)


class PhantomClip:
    """A clip with smooth probe motion, lesion deformation and partially persistent speckle.

    ``len(clip) == n_frames``; ``clip[i]`` -> ``(image, mask)`` as :func:`make_phantom`;
    iteration yields the frames in order.  Frame ``i`` is rendered independently at time
    ``t = i / fps`` (no dependency on earlier frames).
    """

    def __init__(self, n_frames: int, seed: int, config: PhantomConfig | None = None, fps: float = 15.0):
        if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
            raise OptionError(f"n_frames must be a positive integer, got {n_frames!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise OptionError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(fps, (int, float, np.number)) or not (0 < fps < 1e4):
            raise OptionError(f"fps must be a positive number, got {fps!r}")
        self.n_frames, self.seed, self.fps = int(n_frames), int(seed), float(fps)
        self.config = config or PhantomConfig()
        rng = np.random.default_rng([self.seed, 0])
        self._scene = _sample_scene(rng, self.config)
        g = _geom(self.config)
        shape = (g.pr.size, g.px.shape[1])
        self._persistent = (rng.standard_normal(shape, dtype=np.float32),
                            rng.standard_normal(shape, dtype=np.float32))

    def __len__(self) -> int:
        return self.n_frames

    def frame(self, i: int, *, return_layers: bool = False):
        """Frame ``i`` (negative indices allowed); see :func:`make_phantom` for the outputs."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {i!r}")
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(f"frame index {i} out of range for a clip of {self.n_frames} frames")
        i = int(i) % self.n_frames
        rng = np.random.default_rng([self.seed, 1, i])
        return _render(self._scene, self.config, i / self.fps, rng, self._persistent, return_layers)

    def __getitem__(self, i: int):
        return self.frame(i)

    def __iter__(self):
        for i in range(self.n_frames):
            yield self.frame(i)


def make_phantom_dataset(n: int, seed: int, config: PhantomConfig | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` independent frames; frame j uses a child of ``SeedSequence(seed)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise OptionError(f"n must be a non-negative integer, got {n!r}")
    return [make_phantom(np.random.default_rng(s), config) for s in np.random.SeedSequence(seed).spawn(int(n))]
