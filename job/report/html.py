"""report.html: one self-contained page per run or sweep (every figure embedded, no network needed).

Built from metrics.json / sweep.json and the PNGs already in the folder: the page shows the same numbers
the files hold. Plain HTML and inline CSS, no scripts.
May use: numpy, data_prep.digits and the standard library; it reads metrics.json and the figures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from data_prep.atomic import durable_replace
from data_prep.digits import N_CLASSES, PIXEL_MAX

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.4em; } .muted { color: #777; font-size: 0.85em; }
.good { background: #e8f5e9; } .bad { background: #fdecea; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _png(array: np.ndarray, scale: int = 3) -> str:
    """An inline PNG of a uint8 image strip (black ink on white)."""
    import matplotlib.image

    big = np.kron(array, np.ones((scale, scale), dtype=array.dtype))
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, big, cmap="gray_r", vmin=0, vmax=PIXEL_MAX, format="png")
    return f'<img alt="examples" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _table(rows: list[list], header: list[str], left: int = 1) -> str:
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(v)}</td>' for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cards(items: list[tuple[str, object]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><span class="muted">{html.escape(name)}</span><b>{_fmt(v)}</b></div>'
            for name, v in items
        )
        + "</div>"
    )


def _flat(config: dict, prefix: str = "") -> list[list]:
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows.extend(_flat(value, f"{prefix}{key}."))
        else:
            rows.append([f"{prefix}{key}", json.dumps(value) if isinstance(value, (list, tuple)) else value])
    return rows


def _timings(metrics: dict) -> str:
    memory = metrics.get("memory", {})
    rows = [
        [
            name,
            seconds,
            (memory.get(name, {}).get("client_peak_rss") or 0) / 2**20,
            (memory.get(name, {}).get("cluster_peak_memory") or 0) / 2**20,
        ]
        for name, seconds in metrics.get("timings", {}).items()
    ]
    return _table(rows, ["phase", "seconds", "client peak MiB", "cluster peak MiB"])


def _dashboard(metrics: dict) -> str:
    link = metrics.get("dashboard")
    if not link:
        return ""
    safe = html.escape(link)
    return (
        f'<p class="muted">Dask dashboard while the run was live: <a href="{safe}">{safe}</a> '
        "(a cluster the job started closes with it; a cluster it joined keeps serving it).</p>"
    )


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def write_run_report(out: Path, metrics: dict, example_strips: dict[int, np.ndarray]) -> Path:
    """out/report.html for one run. example_strips: cluster -> uint8 [h, m*w] strip of its examples."""
    ev, fit, ds, cfg = metrics["evaluation"], metrics["fit"], metrics["dataset"], metrics["config"]
    table = np.asarray(ev["contingency"])
    sizes = table.sum(axis=1)
    purity = np.where(sizes > 0, table.max(axis=1) / np.maximum(sizes, 1), 0.0)
    digits_h, digits_m = ev["mapping_hungarian"], ev["mapping_majority"]

    parts = [
        f'<p class="muted">{_fmt(ds["n"])} images of {ds["store"]} ({"+".join(ds["splits"])}), '
        f"k={cfg['k']}, seed {cfg['seed']}, started {html.escape(str(metrics.get('started')))}.</p>",
        _dashboard(metrics),
    ]
    cards = [
        ("ARI", ev["ari"]),
        ("NMI", ev["nmi"]),
        ("accuracy (Hungarian)", ev["accuracy_hungarian"]),
        ("accuracy (majority)", ev["accuracy_majority"]),
        ("silhouette", ev.get("silhouette")),
        ("Davies-Bouldin", ev.get("davies_bouldin")),
        ("Calinski-Harabasz", ev.get("calinski_harabasz")),
        ("inertia", fit["inertia"]),
        ("iterations", fit["n_iter"]),
    ]
    if metrics.get("held_out"):
        # Each test image read as the digit its cluster mostly holds: what job.predict answers, at any k.
        cards.append(("held-out accuracy (majority)", metrics["held_out"]["accuracy_majority"]))
        if cfg["k"] <= len(ev["contingency"][0]):  # the one-to-one score means something up to ten clusters
            cards.append(("held-out accuracy (Hungarian)", metrics["held_out"]["accuracy_hungarian"]))
    parts += [
        "<h2>Metrics</h2>",
        _cards(cards),
        _table(
            [
                [name, ev.get(key)]
                for name, key in [
                    ("adjusted Rand index", "ari"),
                    ("normalized mutual information", "nmi"),
                    ("homogeneity", "homogeneity"),
                    ("completeness", "completeness"),
                    ("V-measure", "v_measure"),
                    ("accuracy, one-to-one (Hungarian) mapping", "accuracy_hungarian"),
                    ("accuracy, majority mapping", "accuracy_majority"),
                    (f"silhouette (sample of {ev.get('silhouette_sample')})", "silhouette"),
                    ("Davies-Bouldin (all points)", "davies_bouldin"),
                    ("Calinski-Harabasz (all points)", "calinski_harabasz"),
                ]
            ],
            ["metric", "value"],
        ),
    ]
    if fit.get("starts") and len(fit["starts"]) > 1:
        rows = (fit.get("init") or {}).get("subsample_rows")
        where = f"on a subsample of {rows:,} rows; the best one continued" if rows else "each a whole fit"
        parts += [
            f"<h3>Starts (--n-init): inertia {where}</h3>",
            _table(
                [[s["seed"], s["inertia"], s["n_iter"]] for s in fit["starts"]],
                ["seed", "inertia", "iterations"],
            ),
        ]

    parts.append("<h2>Cluster centers</h2>")
    for name, alt in [
        ("centers.png", "cluster centers"),
        ("pca.png", "PCA of a sample"),
        ("examples_closest.png", "images closest to each center"),
        ("examples_random.png", "random images of each cluster"),
        ("confusion.png", "confusion matrix"),
        ("sizes.png", "cluster sizes"),
    ]:
        if (out / name).exists():
            parts.append(_img(out / name, alt))

    parts.append("<h2>Cluster to digit</h2>")
    rows = [
        [
            c,
            digits_h[c],
            digits_m[c],
            int(sizes[c]),
            float(purity[c]),
            ", ".join(f"{d}: {int(n)}" for d, n in sorted(enumerate(table[c]), key=lambda t: -t[1])[:3] if n),
        ]
        for c in range(len(table))
    ]
    parts.append(
        _table(
            rows,
            ["cluster", "digit (Hungarian)", "digit (majority)", "size", "purity", "most frequent digits"],
        )
    )

    worst = [int(c) for c in np.argsort(purity, kind="stable")[:3] if sizes[c] > 0]
    parts.append(
        "<h2>Worst-matched clusters</h2><p class='muted'>The clusters whose most frequent digit is "
        "the smallest share of their images; their examples show what they mix.</p>"
    )
    for c in worst:
        parts.append(f"<h3>Cluster {c}: {purity[c]:.0%} are {digits_m[c]}s</h3>")
        if c in example_strips:
            parts.append(_png(example_strips[c]))

    note = f'<p class="muted">{fit.get("persist_reason", "")}</p>'
    return _write_page(out, f"K-Means on {ds['store']}: k={cfg['k']}", parts, metrics, note)


def write_sweep_report(out: Path, metrics: dict) -> Path:
    rows = metrics["sweep"]
    k = metrics["suggested_k"]
    parts = [
        f'<p class="muted">{_fmt(metrics["dataset"]["n"])} images of {metrics["dataset"]["store"]}; '
        f"k in {', '.join(str(r['k']) for r in rows)}.</p>",
        _dashboard(metrics),
        f"<h2>Suggested k = {k}</h2><p>{html.escape(metrics['suggestion_reason'])}</p>",
    ]
    for name, alt in [("elbow.png", "elbow"), ("silhouette.png", "silhouette"), ("criteria.png", "criteria")]:
        parts.append(_img(out / name, alt))
    if metrics.get("classifier"):
        parts.append(_classifier_section(out, metrics["classifier"]))
    held_out = bool(metrics.get("classifier"))
    parts += [
        "<h2>Every k</h2>",
        _table(
            # The one-to-one (Hungarian) accuracy means something only while no digit needs two clusters:
            # at k=128 it scored 0.0996 (all but ten clusters count as wrong). "-" above ten clusters.
            [
                [
                    r["k"],
                    r["inertia"],
                    r["n_iter"],
                    r["silhouette"],
                    r["ari"],
                    r["nmi"],
                    r["accuracy_hungarian"] if r["k"] <= N_CLASSES else None,
                    r["accuracy_majority"],
                    *([r["held_out_accuracy"]] if held_out else []),
                    r["davies_bouldin"],
                    r["calinski_harabasz"],
                    r["fit_seconds"],
                ]
                for r in rows
            ],
            [
                "k",
                "inertia",
                "iterations",
                "silhouette",
                "ARI",
                "NMI",
                "accuracy (Hungarian)",
                "accuracy (majority)",
                *(["held-out accuracy"] if held_out else []),
                "Davies-Bouldin",
                "Calinski-Harabasz",
                "fit s",
            ],
        ),
    ]
    parts.append(f"<h2>Centers at the suggested k = {k}</h2>")
    parts.append(_img(out / f"centers_k{k:02d}.png", f"centers for k={k}"))
    parts.append("<h2>Centers for every k</h2>")
    for r in rows:
        if r["k"] != k:
            parts.append(
                f"<h3>k = {r['k']}</h3>" + _img(out / f"centers_k{r['k']:02d}.png", f"centers for k={r['k']}")
            )
    return _write_page(out, f"Choosing k on {metrics['dataset']['store']}", parts, metrics)


def _write_page(out: Path, title: str, parts: list[str], metrics: dict, timings_note: str = "") -> Path:
    """report.html: the page's sections, then its timings (and their note) and its settings."""
    settings = _table(_flat(metrics["config"]), ["setting", "value"])
    tail = ["<h2>Timings</h2>", _timings(metrics), timings_note, "<h2>Configuration</h2>", settings]
    path = out / "report.html"
    path.write_text(_page(title, "".join(parts + tail)))
    return path


def _classifier_section(out: Path, c: dict) -> str:
    """The sweep as a classifier: the accuracy curve, the best k, its per-digit accuracy and confusion,
    and the test images misclassified most often (pictures)."""
    parts = [
        f'<h2 id="classifier">As a classifier</h2><p>Each cluster is read as the majority digit of its '
        f"training images, and every test image as the digit of its nearest center. Best k = "
        f"<b>{c['best_k']}</b>: held-out accuracy <b>{c['held_out_accuracy']:.3f}</b> on "
        f"{_fmt(c['n_test'])} test images.</p>",
        _img(out / "accuracy.png", "held-out accuracy against k"),
        _img(out / "per_digit.png", f"per-digit held-out accuracy at k={c['best_k']}"),
        _img(out / "confusion_test.png", f"test split confusion at k={c['best_k']}"),
    ]
    if (out / "misclassified.png").exists():
        parts.append(_img(out / "misclassified.png", "the test images misclassified most often"))
    return "".join(parts)


def write_live_page(
    path: Path,
    title: str,
    dashboard: str | None,
    done: dict[str, float],
    current: str | None,
    total: int | None,
    detail: str | None = None,
    final_report: Path | None = None,
) -> Path:
    """A page that reloads itself every 5 s while the job runs: the phases so far, how far the running
    one is (`detail`: the fit's latest Lloyd iteration), the dashboard link, and where the full report
    will be. Written next to the checkpoint (<run>.partial/report.html), which goes when the job ends."""
    rows = [[name, seconds] for name, seconds in done.items()]
    if current:
        rows.append([f"{current} (running{': ' + detail if detail else ''})", None])
    final = final_report.resolve().as_uri() if final_report is not None else None
    body = (
        f"<p>Running: phase {len(done) + (1 if current else 0)} of {total or '?'}. This page reloads every "
        f"5 s and goes when the job ends; the full report will then be "
        + (f'<a href="{html.escape(final)}">{html.escape(final)}</a>' if final else "in the run folder")
        + ".</p>"
        + (
            f'<p>Dask dashboard: <a href="{html.escape(dashboard)}">{html.escape(dashboard)}</a></p>'
            if dashboard
            else ""
        )
        + _table(rows, ["phase", "seconds"])
    )
    page = _page(title, body).replace("<head>", '<head><meta http-equiv="refresh" content="5">', 1)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    durable_replace(tmp, path)  # a reload never sees half a page
    return path


def example_strip(images: np.ndarray) -> np.ndarray:
    """uint8 [m, h, w] -> [h, m*w + gaps]: a row of example images with 2-pixel gaps."""
    m, h, w = images.shape
    strip = np.zeros((h, m * (w + 2)), dtype=np.uint8)
    for i, image in enumerate(images):
        strip[:, i * (w + 2) : i * (w + 2) + w] = image
    return strip
