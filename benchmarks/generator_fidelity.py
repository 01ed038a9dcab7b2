"""Is the generated set more of MNIST? The held-out accuracy of a K-Means classifier trained on generated
rows against the same classifier trained on real ones, for deformation settings to choose from.

    python benchmarks/generator_fidelity.py [--rows 40000] [--k 64] [--seeds 0,1]

For each setting (data_prep.augment.Deformation; "real" is MNIST's first --rows training images): the
first --rows rows of the generated set (row r = training image r mod 60,000 deformed by the seed's draws,
exactly what data_prep.generate writes) fitted by scikit-learn's `KMeans(k, n_init=1, random_state=seed)`
in [0, 1] pixels, each cluster read as the majority digit of its training members, accuracy on MNIST's
real 10,000 test images; and how far the generated digits' centers of mass lie from their sources'. A
setting worth generating with reaches the real rows' accuracy. Writes
benchmarks/results/generator_fidelity.json.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import zarr

from _common import mnist_store, print_table, save, timed
from data_prep.augment import Deformation, deform, deformation_draws

# The generator's ranges before it centred digits (Simard et al.'s elastic alpha 34, sigma 4).
BEFORE = {
    "max_rotation_deg": 12.0,
    "scale_range": (0.9, 1.1),
    "max_shear": 0.15,
    "max_shift": 2.0,
    "elastic_alpha": 34.0,
    "elastic_sigma": 4.0,
}
SETTINGS = {  # name: (what it is, the deformation; None: MNIST's own rows)
    "real": ("MNIST's training images", None),
    "before": (
        "rotation 12, scale 0.9-1.1, shear 0.15, shifts 2 px, alpha 34 (the generator before)",
        Deformation(**BEFORE, center_of_mass=False),
    ),
    "before-centred": ("the same, centred by center of mass", Deformation(**BEFORE)),
    "before-centred-a20": ("the same, centred, alpha 20", Deformation(**{**BEFORE, "elastic_alpha": 20.0})),
    "default": ("rotation 8, scale 0.95-1.05, shear 0.1, alpha 10, centred (the default now)", Deformation()),
    "default-a15": ("the default with alpha 15", Deformation(elastic_alpha=15.0)),
    "affine": ("the default without the elastic field", Deformation(elastic_alpha=0.0)),
}


def center_of_mass(images: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(images.shape[1:])
    mass = images.sum(axis=(1, 2), dtype=np.float64)
    return np.stack([(images * ys).sum(axis=(1, 2)) / mass, (images * xs).sum(axis=(1, 2)) / mass], axis=1)


def held_out(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, k: int, seed: int
) -> float:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(X)
    majority = np.array(
        [
            np.bincount(y[model.labels_ == c], minlength=10).argmax() if (model.labels_ == c).any() else 0
            for c in range(k)
        ]
    )
    return float((majority[model.predict(X_test)] == y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--only", default=None, help="comma-separated setting names (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    root = zarr.open_group(str(mnist_store()), mode="r")
    train, labels = root["train/images"][:], root["train/labels"][:]
    X_test = root["test/images"][:].reshape(10_000, -1) / 255.0
    y_test = root["test/labels"][:]
    rows = np.arange(args.rows) % len(train)
    source, y = train[rows], labels[rows]
    chosen = args.only.split(",") if args.only else list(SETTINGS)
    results = []
    for name in chosen:
        description, params = SETTINGS[name]
        accuracies = []
        for seed in seeds:
            if params is None:
                images, seconds = source, 0.0
            else:
                images, seconds = timed(
                    lambda: deform(source, deformation_draws(seed, 0, len(source), source.shape[1:]), params)
                )
            accuracies.append(
                held_out(images.reshape(len(images), -1) / 255.0, y, X_test, y_test, args.k, seed)
            )
        offset = np.linalg.norm(center_of_mass(images) - center_of_mass(source), axis=1)
        results.append(
            {
                "setting": name,
                "what": description,
                "held-out accuracy": statistics.median(accuracies),
                "per seed": " ".join(f"{a:.3f}" for a in accuracies),
                "COM offset px (median)": float(np.median(offset)),
                "COM offset px (p99)": float(np.percentile(offset, 99)),
                "deform s": seconds,
            }
        )
        print_table(results[-1:], list(results[-1]))
    print()
    print_table(results, list(results[0]))
    save(
        "generator_fidelity",
        {
            "rows": args.rows,
            "k": args.k,
            "seeds": seeds,
            "results": results,
            "settings": {name: (p.to_dict() if p else None) for name, (_, p) in SETTINGS.items()},
        },
    )


if __name__ == "__main__":
    main()
