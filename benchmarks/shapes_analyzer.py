"""Accuracy of the Shapes analyzer and pass rate of the GenEval-style scorer on degraded renders.

Renders seeded scenes (all categories, uniform), degrades them with a Gaussian blur and pixel noise
(a stand-in for a small VQ decoder) and reads them back. Per attribute, every true object is matched
to the nearest detection (by centre, each detection used once, within one cell); an unmatched object
counts as wrong on every attribute. "count" is per scene (number of detections == number of objects),
"scene exact" is the whole scene right (same multiset of (shape, color, row, col)).

Then the negatives (corl.shapes.noise_images: uniform / Gaussian / salt-and-pepper / blocky noise,
plain colored canvases, scribbles), n images per kind: the share of images with any recognized
detection (shape and color both known; should be 0) and the scorer pass rate of each image against a
random scene of a random category (overall = mean over categories, as GenEval; should be 0).

    .venv/bin/python benchmarks/shapes_analyzer.py --n 500 --sizes 48 32 64
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np

from corl.shapes.analyzer import UNKNOWN, DetectedObject, analyze
from corl.shapes.noise_images import NOISE_KINDS, noise_image
from corl.shapes.render import cell_size, degrade, render_scene
from corl.shapes.scene import CATEGORIES, Scene, sample_scene
from corl.shapes.scorer import score_detections, summarize_results

# name -> (blur sigma px, noise std on 0..1); "severe" is beyond what we expect, to show the margin.
CONDITIONS: dict[str, tuple[float, float]] = {
    "clean": (0.0, 0.0),
    "mild": (0.8, 0.04),
    "strong": (1.5, 0.10),
    "severe": (2.0, 0.15),
}


def match(scene: Scene, found: list[DetectedObject], size: int) -> list[DetectedObject | None]:
    """For each true object, the nearest unused detection within one cell, or None."""
    cell = cell_size(size)
    free = list(found)
    out: list[DetectedObject | None] = []
    for obj in scene.objects:
        cx, cy = (obj.col + 0.5) * cell, (obj.row + 0.5) * cell
        best = min(free, key=lambda d: math.dist(d.center_xy, (cx, cy)), default=None)
        if best is not None and math.dist(best.center_xy, (cx, cy)) <= cell:
            free.remove(best)
            out.append(best)
        else:
            out.append(None)
    return out


def evaluate(n: int, size: int, blur: float, noise: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    noise_rng = np.random.default_rng(seed)
    hits = {"shape": 0, "color": 0, "row/col": 0}
    n_objects = count_ok = exact = 0
    results, mismatched = [], []
    start = time.perf_counter()
    for _ in range(n):
        scene = sample_scene(rng)
        image = render_scene(scene, size)
        if blur > 0 or noise > 0:
            image = degrade(image, blur, noise, noise_rng)
        found = analyze(image)
        for obj, det in zip(scene.objects, match(scene, found, size)):
            n_objects += 1
            if det is not None:
                hits["shape"] += det.shape == obj.shape
                hits["color"] += det.color == obj.color
                hits["row/col"] += (det.row, det.col) == (obj.row, obj.col)
        count_ok += len(found) == len(scene.objects)
        truth = sorted((o.shape, o.color, o.row, o.col) for o in scene.objects)
        exact += truth == sorted((d.shape, d.color, d.row, d.col) for d in found)
        results.append(score_detections(found, scene))
        # Leniency check: the same detections against another scene of the same category.
        other = sample_scene(rng, scene.category)
        mismatched.append(score_detections(found, other))
    elapsed = time.perf_counter() - start
    row = {k: v / n_objects for k, v in hits.items()}
    row.update({"count": count_ok / n, "scene exact": exact / n, "ms/image": 1000 * elapsed / n})
    row.update({f"pass {k}": v for k, v in summarize_results(results).items()})
    row["false pass overall"] = summarize_results(mismatched)["overall"]
    return row


def evaluate_noise(kind: str, n: int, size: int, seed: int) -> dict[str, float]:
    """Detections on n seeded images of a noise kind, and their scorer pass rate against random scenes."""
    rng, scene_rng = np.random.default_rng(seed), random.Random(seed)
    recognized = n_detections = 0
    results = []
    start = time.perf_counter()
    for _ in range(n):
        found = analyze(noise_image(kind, rng, size))
        n_detections += len(found)
        recognized += any(d.shape != UNKNOWN and d.color != UNKNOWN for d in found)
        results.append(score_detections(found, sample_scene(scene_rng)))
    elapsed = time.perf_counter() - start
    return {
        "any recognized": recognized / n,
        "pass overall": summarize_results(results)["overall"],
        "passed images": float(np.mean([r.passed for r in results])),
        "detections/image": n_detections / n,
        "ms/image": 1000 * elapsed / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="scenes per condition (default 500)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48], help="image sizes in px (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="seed for scenes and noise (default 0)")
    args = parser.parse_args()

    accuracy_cols = ["shape", "color", "row/col", "count", "scene exact", "ms/image"]
    rows = {(size, name): evaluate(args.n, size, *CONDITIONS[name], args.seed)
            for size in args.sizes for name in CONDITIONS}

    print(f"Analyzer accuracy, {args.n} seeded scenes per row (blur sigma px, noise std on 0..1)")
    print(f"{'size':>4} {'condition':<22}" + "".join(f"{c:>12}" for c in accuracy_cols))
    for (size, name), r in rows.items():
        label = f"{name} ({CONDITIONS[name][0]}, {CONDITIONS[name][1]})"
        cells = "".join(f"{r[c]:>12.1f}" if c == "ms/image" else f"{r[c]:>12.3f}" for c in accuracy_cols)
        print(f"{size:>4} {label:<22}" + cells)

    pass_cols = [f"pass {c}" for c in (*CATEGORIES, "overall")]
    print(f"\nScorer pass rate against the image's own scene ({args.n} scenes per row)")
    print("(last column: pass rate of the same image against a random other scene of its category;")
    print(" by chance a few match, e.g. the same shape for single_object)")
    print(f"{'size':>4} {'condition':<10}" + "".join(f"{c[5:]:>14}" for c in pass_cols) + f"{'vs other':>10}")
    for (size, name), r in rows.items():
        print(f"{size:>4} {name:<10}" + "".join(f"{r[c]:>14.3f}" if c in r else f"{'-':>14}" for c in pass_cols)
              + f"{r['false pass overall']:>10.3f}")

    noise_cols = ["any recognized", "pass overall", "passed images", "detections/image", "ms/image"]
    print(f"\nNoise images ({args.n} per kind): share with any recognized object (shape and color known),")
    print("scorer pass rate against a random scene (overall = mean over categories; passed images = share)")
    print(f"{'size':>4} {'kind':<12}" + "".join(f"{c:>18}" for c in noise_cols))
    for size in args.sizes:
        for kind in NOISE_KINDS:
            r = evaluate_noise(kind, args.n, size, args.seed)
            print(f"{size:>4} {kind:<12}" + "".join(
                f"{r[c]:>18.1f}" if c == "ms/image" else f"{r[c]:>18.3f}" for c in noise_cols))


if __name__ == "__main__":
    main()
