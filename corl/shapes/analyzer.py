"""Reading Shapes images back into objects: the verifier of generation and a captioner backend.

`analyze(image)` returns one DetectedObject (shape, color, row, col, center_xy, area) per blob. Classic
image processing with numpy only, robust to the blur and noise of a small VQ decoder:

1. Ink map: ink = 1 - rgb (white background -> 0). A pixel's "strength" is its largest ink channel;
   every palette color has strength >= 0.8, the background 0.
2. Denoising: a 3x3 median of each ink channel (removes salt-and-pepper-like noise, keeps edges).
3. Foreground: strength above FOREGROUND_LEVEL (about half of a palette color's strength, so on a
   blurred straight edge the threshold sits where the sharp edge was).
4. Connected components (4-neighbour, vectorized label propagation). Blobs smaller than
   MIN_AREA_FRACTION of the smallest expected object are noise and dropped. A blob spanning more than
   one grid cell (two objects that bled together) is split along the cell grid.
5. Color: mean ink of the blob's core (strongest pixels), matched to the palette by the residual after
   the best scaling, i.e. by ink *direction*: a color blended with white keeps its ink direction, so
   blur at the rim or a pale generation still reads as its hue.
6. Shape by model fitting: for each shape, an anti-aliased template (box centre from the ink centroid,
   triangles being bottom-heavy; extent from the blob's area, searched over EXTENT_SCALES), blurred by
   each of BLUR_SIGMAS, scaled by its least-squares amplitude, is compared with the blob's window of
   the *unfiltered* image projected on its color's ink direction (background level subtracted; pixels
   nearer another blob masked out). The shape with the smallest residual wins. Fitting the blur makes
   this robust where thresholded features (fill ratio, corners) are not: blur rounds corners, noise
   frays edges, but both are part of the model.
7. Grid cell from the blob's ink-weighted centroid.
8. Rejection: the analyzer is a verifier and a reward backend, so what is not a clean flat shape on
   white must not read as one (noise, scribbles, clutter, an untrained model's output). Labels become
   UNKNOWN (which never matches a caption) when the evidence (`BlobEvidence`) says so:
   - no white background (image level: too little of the image is far from every blob, or that part
     is not white): every blob is (UNKNOWN, UNKNOWN) and nothing is fitted;
   - ink around the blob that the detections do not explain: the model "background + every blob's
     best template in its color" (median-filtered like the observed ink) misses more than
     MAX_UNEXPLAINED_FRACTION of the blob's surround by UNEXPLAINED_LEVEL; or a fitted amplitude
     below MIN_AMPLITUDE (too faint): (UNKNOWN, UNKNOWN);
   - color: not within MAX_COLOR_ANGLE_DEG of a palette ink, achromatic, or the interior not one
     flat color (angle spread, variation along the color): color UNKNOWN;
   - shape: poor template fit, elongated, or a fitted extent outside EXTENT_RATIO_RANGE of a rendered
     object's (too small or too large for the grid): shape UNKNOWN.
   `analyze_detailed` returns the evidence and the reasons with each detection.

`describe(objects)` phrases detections like the captions ("a red circle to the left of a blue square",
"two green triangles"), for the cycle-consistency captioner.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from corl.shapes.captions import count_phrase, with_article
from corl.shapes.render import OBJECT_FRACTION, to_float_array
from corl.shapes.scene import COLORS, GRID, relations_from_offset

FOREGROUND_LEVEL = 0.42
MIN_AREA_FRACTION = 0.2  # of the smallest expected object (a triangle: half its box)
CORE_LEVEL = 0.85  # core pixels: strength >= this fraction of the blob's strongest pixel
SPLIT_EXTENT = 1.35  # a blob wider or taller than this many cells is split along the grid
# Rejection: what fits no palette color / no shape is reported as UNKNOWN (never matches a caption).
UNKNOWN = "unknown"
MAX_COLOR_ANGLE_DEG = 18.0  # palette inks are >= 26 degrees apart; degraded renders stay within 10
MIN_CORE_CHROMA = 0.15  # max - min of the core ink; grey / black blobs have ~0, palette colors >= 0.55
MAX_RELATIVE_RESIDUAL = 0.25  # best fit residual / signal; degraded renders stay below 0.14
MAX_ASPECT = 1.6  # thresholded box aspect ratio; all shapes here are ~1
# Rejection of what is not a clean flat shape on a white background (noise, clutter, scribbles). Margins
# measured on renders at 32/48/64 px up to blur 2.0 px + noise 0.15 (the benchmark's "severe") against
# the six kinds of corl.shapes.noise_images; the values each kind reaches are in the comments.
MIN_BACKGROUND_FRACTION = 0.25  # renders >= 0.38; uniform / plain / blocky noise ~0
MAX_BACKGROUND_INK = 0.10  # mean median-filtered ink of the background: renders <= 0.04, colored canvases >= 0.2
SURROUND_GAP = 2  # px around a blob left out of its surround (its own blurred rim)
UNEXPLAINED_LEVEL = 0.25  # |observed - explained ink| (norm over RGB) that counts a pixel as unexplained
MAX_UNEXPLAINED_FRACTION = 0.10  # of the surround; renders <= 0.05, scribbles / blocky noise mostly above
MIN_AMPLITUDE = 0.5  # fitted template scale; renders >= 0.62
MAX_BRIDGE = 0.8  # cut strength of a split blob / its own: blurred gaps between renders <= 0.70, strokes ~1
MAX_INTERIOR_ANGLE_DEG = 25.0  # renders <= 17 (severe); uniform noise >= 14, blocky mostly >= 12
MAX_INTERIOR_SPREAD = 0.3  # renders <= 0.19
# Fitted extent / rendered extent: renders 0.78..1.14 up to "strong" (48 px: 0.90..1.05; 0.39..1.29 at
# 32 px "severe"); a lone 8 px VQ-patch-sized square at 48 px ~0.75; a whole grid cell 1.39.
EXTENT_RATIO_RANGE = (0.78, 1.25)

# Palette ink vectors (1 - rgb), (K, 3).
_COLOR_NAMES = tuple(COLORS)
_PALETTE_INK = 1.0 - np.array([COLORS[c] for c in _COLOR_NAMES], dtype=np.float64) / 255.0


@dataclass(frozen=True)
class DetectedObject:
    """A blob read from an image; center_xy in pixels (x right, y down), area in pixels."""

    shape: str
    color: str
    row: int
    col: int
    center_xy: tuple[float, float]
    area: int

    @property
    def kind(self) -> tuple[str, str]:
        return (self.color, self.shape)


# ---- pixel operations -------------------------------------------------------------------------

def median3x3(channel: np.ndarray) -> np.ndarray:
    """3x3 median filter of an (H, W) array, edges replicated."""
    h, w = channel.shape
    padded = np.pad(channel, 1, mode="edge")
    stack = np.stack([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])  # (9, H, W)
    return np.median(stack, axis=0)


def ink_map(image: Image.Image | np.ndarray, denoise: bool = True) -> np.ndarray:
    """(H, W, 3) ink = 1 - rgb in 0..1, optionally median-filtered per channel."""
    ink = 1.0 - to_float_array(image)
    if denoise:
        ink = np.stack([median3x3(ink[..., c]) for c in range(3)], axis=-1)
    return ink


def _run_ids(mask: np.ndarray) -> np.ndarray:
    """(H, W) index of the horizontal run of True pixels each pixel belongs to (garbage where False)."""
    h, w = mask.shape
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]  # a run starts where the left neighbour is off (or at column 0)
    return np.cumsum(starts.ravel()).reshape(h, w) - 1


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean (H, W) mask, as (N_i, 2) arrays of (y, x) pixel indices,
    ordered by their first pixel in row-major order.

    Vectorized min-label propagation: every pixel starts with its own flat index; each round gives
    every horizontal run, then every vertical run, the smallest label in it, until nothing changes.
    Each round follows a path through all its straight stretches, so rounds ~ turns of the longest path.
    """
    if not mask.any():
        return []
    rows, cols = _run_ids(mask)[mask], _run_ids(mask.T).T[mask]  # (N,) run of each foreground pixel
    labels = np.flatnonzero(mask)  # (N,) flat index = initial label, row-major order
    while True:
        before = labels
        for run in (rows, cols):
            smallest = np.full(int(run.max()) + 1, labels.max() + 1)
            np.minimum.at(smallest, run, labels)
            labels = smallest[run]
        if np.array_equal(labels, before):
            break
    ys, xs = np.nonzero(mask)  # row-major, aligned with `labels`
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    comps = []
    for k in np.argsort(first, kind="stable"):
        members = inverse == k
        comps.append(np.stack([ys[members], xs[members]], axis=1).astype(np.int64))
    return comps


# ---- per-blob classification -------------------------------------------------------------------

def classify_color(core_ink: np.ndarray) -> str:
    """Palette color whose ink direction best explains the mean core ink (3,), or UNKNOWN.

    Direction, not value: a color blended with white (blur at the rim, a pale generation) keeps its
    ink direction. UNKNOWN when the best direction is more than MAX_COLOR_ANGLE_DEG off, or when the
    ink is nearly achromatic (grey / black).
    """
    norm = float(np.linalg.norm(core_ink))
    if norm <= 1e-9 or float(core_ink.max() - core_ink.min()) < MIN_CORE_CHROMA:
        return UNKNOWN
    cosines = _PALETTE_INK @ core_ink / (np.linalg.norm(_PALETTE_INK, axis=1) * norm)  # (K,)
    best = int(np.argmax(cosines))
    if math.degrees(math.acos(min(1.0, float(cosines[best])))) > MAX_COLOR_ANGLE_DEG:
        return UNKNOWN
    return _COLOR_NAMES[best]


# Shape fit: candidate extents (x the area-based estimate) and blur levels (px) searched per shape.
EXTENT_SCALES: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.2)
BLUR_SIGMAS: tuple[float, ...] = (0.0, 0.6, 1.1, 1.6, 2.2)
SUPERSAMPLE = 4
WINDOW_PAD = 4  # px around a blob's thresholded box that its shape fit looks at
# Area of a shape relative to its bounding box (triangle: apex up, base = height = extent).
AREA_FACTOR: dict[str, float] = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
# Offset of the ink centroid from the bounding-box centre, in extents (triangles are bottom-heavy).
CENTROID_OFFSET: dict[str, float] = {"circle": 0.0, "square": 0.0, "triangle": 1.0 / 6.0}


def shape_coverage(
    shape: str, h: int, w: int, cx: float | np.ndarray, cy: float | np.ndarray, extents: np.ndarray
) -> np.ndarray:
    """(E, h, w) anti-aliased coverage of `shape`, one map per extent; box centres (cx, cy) scalar or (E,).

    Pixel (y, x) covers [y, y+1) x [x, x+1); coverage is the inside fraction of SUPERSAMPLE^2 points.
    """
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    ys = (np.arange(h)[:, None] + offsets[None, :]).reshape(-1)  # (h*S,)
    xs = (np.arange(w)[:, None] + offsets[None, :]).reshape(-1)  # (w*S,)
    extents = np.asarray(extents, dtype=np.float64)
    half = extents[:, None, None] / 2  # (E, 1, 1)
    cy_e = np.broadcast_to(np.asarray(cy, dtype=np.float64), extents.shape)[:, None, None]  # (E, 1, 1)
    cx_e = np.broadcast_to(np.asarray(cx, dtype=np.float64), extents.shape)[:, None, None]
    dy = ys[None, :, None] - cy_e  # (E, h*S, 1)
    dx = xs[None, None, :] - cx_e  # (E, 1, w*S)
    if shape == "circle":
        inside = dx**2 + dy**2 <= half**2
    elif shape == "square":
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    elif shape == "triangle":
        depth = dy + half  # 0 at the apex, extent at the base
        inside = (depth >= 0) & (depth <= 2 * half) & (np.abs(dx) <= depth / 2)
    else:
        raise ValueError(f"no coverage rule for shape {shape!r}")
    return inside.reshape(len(extents), h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(2, 4))


def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix applying a sampled, unit-sum Gaussian blur along one axis (zeros outside)."""
    if sigma <= 0:
        return np.eye(n)
    radius = np.arange(-n, n + 1)
    norm = np.exp(-0.5 * (radius / sigma) ** 2).sum()
    i = np.arange(n)
    return np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2) / norm


@dataclass(frozen=True)
class ShapeFit:
    """The best blurred template of one shape for a blob's alpha map (window coordinates)."""

    residual: float  # weighted mean squared residual of alpha
    amplitude: float  # least-squares scale of the template (1 = full palette color)
    extent: float  # side of the template's bounding box, px
    sigma: float  # blur of the template, px
    template: np.ndarray  # (h, w) blurred coverage at amplitude 1


def fit_shape(alpha: np.ndarray, weight: np.ndarray, centroid: tuple[float, float], area: float) -> dict[str, ShapeFit]:
    """Best blurred template of each shape for an observed alpha map.

    alpha: (h, w) ink along the blob's color direction (1 = full color, 0 = background).
    weight: (h, w) 1 where the pixel belongs to this blob's window, 0 elsewhere (other blobs).
    centroid: ink centroid (x, y) in window pixels; area: thresholded blob area in px.
    For each shape, the box centre follows from the centroid, the extent from the area (searched over
    EXTENT_SCALES), the blur over BLUR_SIGMAS and the amplitude in closed form (least squares); the
    (extent, blur) pair with the smallest weighted mean squared residual is kept.
    """
    h, w = alpha.shape
    blur_rows = np.stack([blur_matrix(h, s) for s in BLUR_SIGMAS])  # (S, h, h)
    blur_cols = np.stack([blur_matrix(w, s) for s in BLUR_SIGMAS])  # (S, w, w)
    total_weight = max(float(weight.sum()), 1.0)
    fits: dict[str, ShapeFit] = {}
    for shape, factor in AREA_FACTOR.items():
        extents = math.sqrt(area / factor) * np.asarray(EXTENT_SCALES)  # (E,)
        cy = centroid[1] - CENTROID_OFFSET[shape] * extents  # (E,) box centre above the centroid
        cov = shape_coverage(shape, h, w, centroid[0], cy, extents)  # (E, h, w)
        # Every (extent, blur) template at once: B_rows @ cov @ B_cols^T -> (E, S, h, w)
        templates = blur_rows[None] @ cov[:, None] @ blur_cols.transpose(0, 2, 1)[None]
        tw = templates * weight  # (E, S, h, w)
        denom = (tw * templates).sum(axis=(-2, -1))  # (E, S)
        amp = np.where(denom > 0, (tw * alpha).sum(axis=(-2, -1)) / np.maximum(denom, 1e-12), 0.0)  # (E, S)
        err = (weight * (alpha - amp[..., None, None] * templates) ** 2).sum(axis=(-2, -1))  # (E, S)
        e, s = np.unravel_index(int(np.argmin(err)), err.shape)
        fits[shape] = ShapeFit(float(err[e, s]) / total_weight, float(amp[e, s]), float(extents[e]),
                               BLUR_SIGMAS[s], templates[e, s])
    return fits


def classify_shape(fits: dict[str, ShapeFit], signal: float, aspect: float) -> str:
    """Shape with the smallest fit residual, or UNKNOWN for elongated blobs or poor fits.

    signal: weighted mean of alpha^2 in the window (the residual's scale); aspect: long / short side
    of the thresholded box.
    """
    best = min(fits, key=lambda s: fits[s].residual)
    if aspect > MAX_ASPECT or signal <= 0 or fits[best].residual / signal > MAX_RELATIVE_RESIDUAL:
        return UNKNOWN
    return best


def _split_by_cells(pixels: np.ndarray, strength: np.ndarray, cell_h: float, cell_w: float,
                    min_area: float) -> list[tuple[np.ndarray, float]]:
    """Split a blob that spans several grid cells into per-cell parts (parts below min_area dropped).

    Returns (part, bridge) pairs. bridge: mean strength of the part's pixels that touch another part
    (the cut), over the part's strongest pixel. Two objects only merge through a blurred gap, whose ink
    is well below the objects' (renders <= ~0.7); a cut through a stroke or noise keeps full strength.
    """
    rows = np.minimum((pixels[:, 0] + 0.5) // cell_h, GRID - 1).astype(np.int64)
    cols = np.minimum((pixels[:, 1] + 0.5) // cell_w, GRID - 1).astype(np.int64)
    cell_of = np.full(strength.shape, -1, dtype=np.int64)  # (H, W) cell index of the blob's pixels
    cell_of[pixels[:, 0], pixels[:, 1]] = rows * GRID + cols
    padded = np.pad(cell_of, 1, constant_values=-1)
    ys, xs = pixels[:, 0] + 1, pixels[:, 1] + 1
    own = cell_of[pixels[:, 0], pixels[:, 1]]  # (N,)
    touches_other = np.zeros(len(pixels), dtype=bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        other = padded[ys + dy, xs + dx]
        touches_other |= (other >= 0) & (other != own)
    s = strength[pixels[:, 0], pixels[:, 1]]  # (N,)
    parts = []
    for cell in sorted(set(own.tolist())):
        members = own == cell
        if members.sum() >= min_area:
            cut = members & touches_other
            bridge = float(s[cut].mean() / s[members].max()) if cut.any() else 0.0
            parts.append((pixels[members], bridge))
    return parts


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation with a 3x3 cross, `steps` times."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    """Binary erosion with a 3x3 cross (pixels outside the array count as outside the mask)."""
    return ~_dilate(np.pad(~mask, 1, constant_values=True), 1)[1:-1, 1:-1]


def grow_labels(blobs: list[np.ndarray], shape: tuple[int, int], steps: int) -> np.ndarray:
    """(H, W) label map: blob k's pixels are k, then labels spread to 4-neighbours `steps` times
    (a city-block Voronoi partition near the blobs); unreached pixels are -1."""
    labels = np.full(shape, -1, dtype=np.int64)
    for k, pix in enumerate(blobs):
        labels[pix[:, 0], pix[:, 1]] = k
    for _ in range(steps):
        grown = labels.copy()
        for src, dst in (
            (np.s_[:-1, :], np.s_[1:, :]),
            (np.s_[1:, :], np.s_[:-1, :]),
            (np.s_[:, :-1], np.s_[:, 1:]),
            (np.s_[:, 1:], np.s_[:, :-1]),
        ):
            take = (grown[dst] == -1) & (labels[src] >= 0)
            grown[dst][take] = labels[src][take]
        labels = grown
    return labels


def expected_extent(h: int, w: int) -> float:
    """Side in px of an object's bounding box in an h x w image (as render.py draws it)."""
    return OBJECT_FRACTION * min(h, w) / GRID


def find_blobs(strength: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    """Foreground blobs of a (H, W) strength map as (N, 2) (y, x) pixel arrays, noise dropped, merges
    split, with each blob's bridge (see `_split_by_cells`; 0 for a blob that needed no split)."""
    h, w = strength.shape
    cell_h, cell_w = h / GRID, w / GRID
    min_area = MIN_AREA_FRACTION * AREA_FACTOR["triangle"] * expected_extent(h, w) ** 2
    blobs: list[np.ndarray] = []
    bridges: list[float] = []
    for comp in connected_components(strength > FOREGROUND_LEVEL):
        if len(comp) < min_area:
            continue
        span_y = comp[:, 0].max() - comp[:, 0].min() + 1
        span_x = comp[:, 1].max() - comp[:, 1].min() + 1
        if span_y > SPLIT_EXTENT * cell_h or span_x > SPLIT_EXTENT * cell_w:
            for part, bridge in _split_by_cells(comp, strength, cell_h, cell_w, min_area):
                blobs.append(part)
                bridges.append(bridge)
        else:
            blobs.append(comp)
            bridges.append(0.0)
    return blobs, bridges


@dataclass(frozen=True)
class BlobEvidence:
    """What analyze measured on one blob, and why its labels are what they are.

    background_fraction / background_ink: share of the image farther than WINDOW_PAD px from every
        blob, and the largest channel of its mean (median-filtered) ink: the image-level test that the
        objects lie on a plain white background.
    unexplained: share of the blob's surround (its fit window less the blob grown by SURROUND_GAP px)
        whose ink the model "white background + every blob's fitted template" misses by more than
        UNEXPLAINED_LEVEL: other ink around the blob (noise, clutter, a non-white background).
    amplitude: least-squares scale of the best template (1 = full palette color).
    extent_ratio: the best template's extent relative to a rendered object at this image size.
    fit_residual: best template's residual / signal; aspect: long / short side of the blob's box.
    interior_angle_deg: 90th percentile over interior pixels of the angle between their ink and the
        blob's color direction; interior_spread: coefficient of variation of their ink along it.
    bridge: for a part of a blob split along the grid, the strength of the ink joining it to the next
        cell relative to its own (0 when no split was needed).
    reasons: why a label is UNKNOWN (empty when the object is fully recognized).
    """

    background_fraction: float
    background_ink: float
    unexplained: float = 0.0
    amplitude: float = 0.0
    extent_ratio: float = 0.0
    fit_residual: float = 0.0
    aspect: float = 0.0
    interior_angle_deg: float = 0.0
    interior_spread: float = 0.0
    bridge: float = 0.0
    reasons: tuple[str, ...] = ()


@dataclass
class _BlobFit:
    """Working state of one blob between fitting and judging (window = [y0:y1, x0:x1])."""

    pixels: np.ndarray  # (N, 2) (y, x)
    bridge: float
    color: str
    direction: np.ndarray  # (3,) ink of full color: the palette ink, or the core ink for UNKNOWN
    window: tuple[int, int, int, int]  # y0, y1, x0, x1
    center_xy: tuple[float, float]
    fits: dict[str, ShapeFit]
    signal: float
    aspect: float
    interior_angle_deg: float
    interior_spread: float

    @property
    def best(self) -> str:
        return min(self.fits, key=lambda s: self.fits[s].residual)


def _interior_color_spread(ink: np.ndarray, mask: np.ndarray, direction: np.ndarray) -> tuple[float, float]:
    """(90th-percentile angle in degrees, coefficient of variation of the projection) of the ink of
    the mask's interior pixels (the mask eroded once; the mask itself when that leaves < 3 pixels)
    against `direction` (3,). A flat color gives (~0, ~0); noise or mixed colors give large values."""
    interior = _erode(mask)
    if interior.sum() < 3:
        interior = mask
    px = ink[interior]  # (M, 3)
    unit = direction / np.linalg.norm(direction)
    along = px @ unit  # (M,)
    norms = np.maximum(np.linalg.norm(px, axis=1), 1e-9)
    angles = np.degrees(np.arccos(np.clip(along / norms, -1.0, 1.0)))
    spread = float(along.std() / max(float(along.mean()), 1e-9))
    return float(np.percentile(angles, 90)), spread


def _fit_blob(k: int, pix: np.ndarray, bridge: float, raw_ink: np.ndarray, ink: np.ndarray,
              background: np.ndarray, owner: np.ndarray) -> _BlobFit | None:
    """Color, centroid and shape fits of blob k (see the module docstring, steps 5 to 7)."""
    h, w = owner.shape
    ys, xs = pix[:, 0], pix[:, 1]
    s = ink[ys, xs].max(axis=-1)  # (N,) strength
    core = s >= CORE_LEVEL * s.max()
    core_ink = ink[ys[core], xs[core]].mean(axis=0)  # (3,)
    color = classify_color(core_ink)
    # Project on the palette ink, or on the blob's own core ink for an unknown color.
    p = _PALETTE_INK[_COLOR_NAMES.index(color)] if color != UNKNOWN else core_ink
    if float(p @ p) <= 1e-9:
        return None  # a blob with no ink cannot exist above FOREGROUND_LEVEL; guards the division
    y0, y1 = max(0, int(ys.min()) - WINDOW_PAD), min(h, int(ys.max()) + WINDOW_PAD + 1)
    x0, x1 = max(0, int(xs.min()) - WINDOW_PAD), min(w, int(xs.max()) + WINDOW_PAD + 1)
    alpha = ((raw_ink[y0:y1, x0:x1] - background) @ p) / float(p @ p)  # (h_win, w_win)
    weight = (owner[y0:y1, x0:x1] == k).astype(np.float64)
    wa = weight * alpha
    mass = float(wa.sum())
    if mass <= 0:  # only possible for pathological inputs; fall back to the thresholded pixels
        wa, mass = np.zeros_like(alpha), float(len(pix))
        wa[ys - y0, xs - x0] = 1.0
    yy, xx = np.mgrid[0:y1 - y0, 0:x1 - x0]
    cx_win = float((wa * (xx + 0.5)).sum()) / mass
    cy_win = float((wa * (yy + 0.5)).sum()) / mass
    fits = fit_shape(alpha, weight, (cx_win, cy_win), float(len(pix)))
    signal = float((weight * alpha**2).sum()) / max(float(weight.sum()), 1.0)
    span_y, span_x = np.ptp(ys) + 1, np.ptp(xs) + 1
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    mask[ys - y0, xs - x0] = True
    angle, spread = _interior_color_spread(ink[y0:y1, x0:x1], mask, p)
    return _BlobFit(pix, bridge, color, p, (y0, y1, x0, x1), (cx_win + x0, cy_win + y0), fits, signal,
                    float(max(span_y, span_x) / min(span_y, span_x)), angle, spread)


def _model_ink(fitted: list[_BlobFit], background: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) ink the detections explain: background plus every blob's best template times its color."""
    model = np.broadcast_to(background, (*shape, 3)).copy()
    for b in fitted:
        fit = b.fits[b.best]
        y0, y1, x0, x1 = b.window
        model[y0:y1, x0:x1] += max(fit.amplitude, 0.0) * fit.template[..., None] * b.direction
    return model


def _judge(b: _BlobFit, unexplained: float, extent: float, base: BlobEvidence) -> tuple[str, str, BlobEvidence]:
    """(shape, color, evidence) of a fitted blob: the rules that turn evidence into UNKNOWN labels."""
    best = b.best
    fit = b.fits[best]
    evidence = BlobEvidence(
        base.background_fraction, base.background_ink, unexplained, fit.amplitude, fit.extent / extent,
        fit.residual / b.signal if b.signal > 0 else math.inf, b.aspect, b.interior_angle_deg, b.interior_spread,
        b.bridge,
    )
    reasons = []
    if b.bridge > MAX_BRIDGE:
        reasons.append("joined to ink in the next cell")
    if unexplained > MAX_UNEXPLAINED_FRACTION:
        reasons.append("ink around the blob that no object explains")
    if fit.amplitude < MIN_AMPLITUDE:
        reasons.append("too faint")
    if reasons:  # not a clean object at all: neither label is trustworthy
        return UNKNOWN, UNKNOWN, replace(evidence, reasons=tuple(reasons))
    color, shape = b.color, classify_shape(b.fits, b.signal, b.aspect)
    if color == UNKNOWN:
        reasons.append("not a palette color")
    elif evidence.interior_angle_deg > MAX_INTERIOR_ANGLE_DEG or evidence.interior_spread > MAX_INTERIOR_SPREAD:
        color = UNKNOWN
        reasons.append("not one flat color")
    if shape == UNKNOWN:
        reasons.append("fits no shape")
    elif not EXTENT_RATIO_RANGE[0] <= evidence.extent_ratio <= EXTENT_RATIO_RANGE[1]:
        shape = UNKNOWN
        reasons.append("implausible size")
    return shape, color, replace(evidence, reasons=tuple(reasons))


def _cell_of(center_xy: tuple[float, float], h: int, w: int) -> tuple[int, int]:
    row = min(max(int(center_xy[1] // (h / GRID)), 0), GRID - 1)
    col = min(max(int(center_xy[0] // (w / GRID)), 0), GRID - 1)
    return row, col


def analyze_detailed(image: Image.Image | np.ndarray) -> list[tuple[DetectedObject, BlobEvidence]]:
    """Like `analyze`, each detection paired with the evidence behind its labels (for debugging)."""
    raw_ink = 1.0 - to_float_array(image)  # (H, W, 3), for the shape fit (unbiased by filtering)
    ink = ink_map(image)  # (H, W, 3), median-filtered, for segmentation, color and explanation
    h, w = ink.shape[:2]
    blobs, bridges = find_blobs(ink.max(axis=-1))
    if not blobs:
        return []

    # Background: pixels far from every blob. Its level (noise clipped at white has a positive mean)
    # is subtracted before fitting; a Shapes image must have enough of it, and it must be white.
    foreground = np.zeros((h, w), dtype=bool)
    for pix in blobs:
        foreground[pix[:, 0], pix[:, 1]] = True
    far = ~_dilate(foreground, WINDOW_PAD)
    fraction = float(far.mean())
    background_raw = raw_ink[far].mean(axis=0) if far.any() else np.zeros(3)  # (3,)
    background_med = ink[far].mean(axis=0) if far.any() else np.ones(3)  # (3,)
    base = BlobEvidence(fraction, float(background_med.max()))
    if fraction < MIN_BACKGROUND_FRACTION or base.background_ink > MAX_BACKGROUND_INK:
        # Not objects on a white background (noise, a colored canvas): report blobs, recognize none.
        out = []
        for pix in blobs:
            center = (float(pix[:, 1].mean()) + 0.5, float(pix[:, 0].mean()) + 0.5)
            obj = DetectedObject(UNKNOWN, UNKNOWN, *_cell_of(center, h, w), center, len(pix))
            out.append((obj, replace(base, reasons=("no white background",))))
        return sorted(out, key=lambda t: (t[0].row, t[0].col, t[0].center_xy))

    # Each pixel near a blob belongs to the nearest one (grown ring by ring), so fits ignore neighbours' ink.
    owner = grow_labels(blobs, (h, w), steps=2 * WINDOW_PAD + 2)  # (H, W), -1 = nobody's
    fitted = [f for k, (pix, bridge) in enumerate(zip(blobs, bridges))
              if (f := _fit_blob(k, pix, bridge, raw_ink, ink, background_raw, owner))]
    # What the detections explain, filtered like the observed ink, and where the image departs from it.
    model = _model_ink(fitted, background_med, (h, w))
    model = np.stack([median3x3(model[..., c]) for c in range(3)], axis=-1)
    miss = np.linalg.norm(ink - model, axis=-1) > UNEXPLAINED_LEVEL  # (H, W)
    extent = expected_extent(h, w)
    out = []
    for b in fitted:
        y0, y1, x0, x1 = b.window
        blob = np.zeros((h, w), dtype=bool)
        blob[b.pixels[:, 0], b.pixels[:, 1]] = True
        surround = ~_dilate(blob, SURROUND_GAP)[y0:y1, x0:x1]  # (h_win, w_win)
        unexplained = float(miss[y0:y1, x0:x1][surround].mean()) if surround.any() else 0.0
        shape, color, evidence = _judge(b, unexplained, extent, base)
        obj = DetectedObject(shape, color, *_cell_of(b.center_xy, h, w), b.center_xy, len(b.pixels))
        out.append((obj, evidence))
    return sorted(out, key=lambda t: (t[0].row, t[0].col, t[0].center_xy))


def analyze(image: Image.Image | np.ndarray) -> list[DetectedObject]:
    """Objects detected in a Shapes image, sorted by (row, col); unsure labels are UNKNOWN."""
    return [obj for obj, _ in analyze_detailed(image)]


# ---- describing detections --------------------------------------------------------------------

def _relation(a: DetectedObject, b: DetectedObject) -> str | None:
    rels = relations_from_offset(a.center_xy[0] - b.center_xy[0], a.center_xy[1] - b.center_xy[1])
    return next(iter(rels)) if len(rels) == 1 else None


def _words(o: DetectedObject) -> tuple[str, str]:
    """(color word or '', noun): unknown colors are left out, unknown shapes become 'shape'."""
    return ("" if o.color == UNKNOWN else o.color, "shape" if o.shape == UNKNOWN else o.shape)


def describe(objects: list[DetectedObject]) -> str:
    """A caption-like description of detections, e.g. 'a red circle to the left of a blue square'.

    Two different objects are related by position when exactly one relation holds between them
    ("to the left of", "right of", "above", "below"), else joined by "and"; identical objects are
    counted ("two green triangles"); larger scenes list groups by count. Unknown colors are left
    out and unknown shapes called "shape" ("a red shape").
    """
    if not objects:
        return "an empty image"
    groups = Counter(_words(o) for o in objects)
    if len(objects) == 2 and len(groups) == 2:
        a, b = sorted(objects, key=lambda o: (o.row, o.col))
        rel = _relation(a, b)
        phrases = [with_article(" ".join(w for w in _words(o) if w)) for o in (a, b)]
        if rel is None:
            return f"{phrases[0]} and {phrases[1]}"
        rel_text = {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)
        return f"{phrases[0]} {rel_text} {phrases[1]}"
    # Groups in reading order of their first member.
    first_seen: dict[tuple[str, str], int] = {}
    for i, o in enumerate(objects):
        first_seen.setdefault(_words(o), i)
    parts = [count_phrase(groups[k], k[1], k[0] or None) for k in sorted(groups, key=first_seen.__getitem__)]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def detected_count(objects: list[DetectedObject], shape: str, color: str | None = None) -> int:
    """How many detections have `shape` (and `color` when given)."""
    return sum(o.shape == shape and (color is None or o.color == color) for o in objects)

