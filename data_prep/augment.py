"""Random small deformations of digit images, in the spirit of infinite-MNIST / MNIST8M.

Each output image is a source image under a random affine map (rotation, scaling, shear, translation)
followed by an elastic distortion (Simard et al. 2003: a field of uniform random displacements smoothed by
a Gaussian and scaled), resampled bilinearly. Pure functions on numpy arrays, vectorised over a batch.

Reproducibility: the random numbers of output row r are the r-th block of DRAWS_PER_IMAGE uniforms of a
Philox stream keyed by the seed (counter-based: any block is reached directly). So an image depends only
on (seed, r, its source image, the parameters): never on chunk sizes, batch sizes, workers or the order
in which chunks are made.
May use: numpy, numba and data_prep.digits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numba
import numpy as np

from .digits import PIXEL_MAX

AFFINE_DRAWS = 8  # 5 used (rotation, scale, shear, shift y, shift x), padded to a Philox block of 4
RECENTER_STEPS = 3  # resamplings that move a deformed digit's center of mass onto its source's


@dataclass(frozen=True)
class Deformation:
    """Ranges of the random deformation.

    The defaults were chosen by the held-out accuracy of a K-Means classifier trained on generated rows
    (benchmarks/generator_fidelity.py, docs/benchmarks.md section 12): a set "in the spirit of MNIST8M"
    should be more of MNIST's distribution. On 40,000 rows, k=64, median of 3 seeds: MNIST's own rows
    0.845; Simard et al.'s elastic alpha 34 with rotation 12, scale 0.9-1.1, shear 0.15 and 2 px shifts
    0.665; the same centred by center of mass 0.768; these ranges, centred, 0.835.
    """

    max_rotation_deg: float = 8.0
    scale_range: tuple[float, float] = (0.95, 1.05)
    max_shear: float = 0.1
    max_shift: float = 2.0  # pixels, each axis; used only without center_of_mass
    elastic_alpha: float = 10.0  # Simard et al. used 34 (with sigma 4) to train classifiers robust to more
    elastic_sigma: float = 4.0
    # Put each deformed digit's center of mass where its source's is, as MNIST centres its digits (the
    # shift draws are then unused).
    center_of_mass: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def draws_per_image(image_shape: tuple[int, int]) -> int:
    h, w = image_shape
    return AFFINE_DRAWS + 2 * h * w  # a multiple of 4 (a Philox block holds four 64-bit words)


def deformation_draws(seed: int, start: int, count: int, image_shape: tuple[int, int]) -> np.ndarray:
    """float64 [count, draws_per_image] in [0, 1): the draws of rows start .. start+count-1 for `seed`."""
    per_image = draws_per_image(image_shape)
    bit_generator = np.random.Philox(key=seed)
    bit_generator.advance(start * per_image // 4)  # Philox advances in blocks of four 64-bit words
    return np.random.Generator(bit_generator).random((count, per_image))


def _smoothing_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] matrix of a 1-D Gaussian filter with zero padding (scipy's mode="constant", truncate=4)."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((n, n))
    for i in range(n):
        for o, k in zip(offsets, kernel):
            if 0 <= i + o < n:
                matrix[i, i + o] = k
    return matrix


@numba.njit(cache=True, nogil=True)
def _deform_one(image, u, knobs, smooth_h, smooth_w, out):  # pragma: no cover - compiled
    """Deform one image by its draws `u`, written to `out`. `knobs`: the Deformation's numbers as float64
    (max rotation in degrees, scale low, scale high, max shear, max shift, elastic alpha, recentre 0/1).

    Everything per image and in a fixed order of operations, in float64: no BLAS, no SIMD library
    routines whose results could depend on how many images share a call (a batched GEMM and numpy's
    vectorised cos did, by one grey level in 48 of 48 million pixels, which broke "same bytes whatever the
    chunking").
    """
    max_rotation, scale_lo, scale_hi, max_shear, max_shift, alpha, recenter = knobs
    h, w = image.shape
    angle = (2 * u[0] - 1) * max_rotation * np.pi / 180.0
    inv_scale = 1.0 / (scale_lo + (scale_hi - scale_lo) * u[1])
    shear = (2 * u[2] - 1) * max_shear
    shift_y, shift_x = (2 * u[3] - 1) * max_shift, (2 * u[4] - 1) * max_shift
    cos, sin = np.cos(angle) * inv_scale, np.sin(angle) * inv_scale

    # Elastic displacement fields: uniform noise in [-1, 1], Gaussian-smoothed along x then y, times alpha.
    fields = np.zeros((2, h, w))
    along_x = np.empty((h, w))
    values = np.empty((h, w))
    for c in range(2):
        base = AFFINE_DRAWS + c * h * w
        for y in range(h):
            for x in range(w):
                acc = 0.0
                for t in range(w):
                    acc += (2 * u[base + y * w + t] - 1) * smooth_w[x, t]
                along_x[y, x] = acc
        for y in range(h):
            for t in range(h):
                m = smooth_h[y, t] * alpha
                if m != 0.0:
                    for x in range(w):
                        fields[c, y, x] += m * along_x[t, x]

    if recenter == 0.0:
        _sample(image, cos, sin, shear, shift_y, shift_x, fields, values)
    else:
        # MNIST's own digits are centred by their center of mass in the 28x28 field (LeCun et al.'s
        # description of the database); pixel-space K-Means cannot absorb a digit moved off it. So the
        # deformed digit is put where its source's center of mass is: the shift draws are not used, and
        # a few resamplings move the output's center of mass onto the source's (the elastic field makes
        # the first estimate inexact; after three steps 99% of digits are within 0.011 px of their source's:
        # benchmarks/generator_fidelity.py, checked in tests/test_generate.py).
        src_y, src_x, mass = _center_of_mass(image.astype(np.float64))
        shift_y = shift_x = 0.0
        for _ in range(RECENTER_STEPS):
            _sample(image, cos, sin, shear, shift_y, shift_x, fields, values)
            out_y, out_x, out_mass = _center_of_mass(values)
            if mass == 0.0 or out_mass == 0.0:
                break
            shift_y += src_y - out_y
            shift_x += src_x - out_x
        _sample(image, cos, sin, shear, shift_y, shift_x, fields, values)
    for y in range(h):
        for x in range(w):
            out[y, x] = min(PIXEL_MAX, max(0, int(values[y, x] + 0.5)))


@numba.njit(cache=True, nogil=True)
def _center_of_mass(values):  # pragma: no cover - compiled
    """(row, column, total) of the intensity-weighted center of a float64 image."""
    h, w = values.shape
    total = sy = sx = 0.0
    for y in range(h):
        for x in range(w):
            v = values[y, x]
            total += v
            sy += v * y
            sx += v * x
    if total == 0.0:
        return 0.0, 0.0, 0.0
    return sy / total, sx / total, total


@numba.njit(cache=True, nogil=True)
def _sample(image, cos, sin, shear, shift_y, shift_x, fields, values):  # pragma: no cover - compiled
    """For every output pixel, where to read in the source: the inverse affine map about the centre,
    displaced by the fields; bilinear interpolation, zero outside the image. Written to `values`."""
    h, w = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    for y in range(h):
        yy = y - cy
        for x in range(w):
            sx = (x - cx) + shear * yy
            src_y = cos * yy - sin * sx + cy - shift_y + fields[0, y, x]
            src_x = sin * yy + cos * sx + cx - shift_x + fields[1, y, x]
            y0, x0 = int(np.floor(src_y)), int(np.floor(src_x))
            fy, fx = src_y - y0, src_x - x0
            value = 0.0
            for corner in range(4):  # the neighbours (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)
                dy, dx = corner // 2, corner % 2
                yi, xi = y0 + dy, x0 + dx
                if 0 <= yi < h and 0 <= xi < w:
                    value += (fy if dy else 1.0 - fy) * (fx if dx else 1.0 - fx) * image[yi, xi]
            values[y, x] = value


@numba.njit(cache=True, nogil=True)
def _deform_batch(images, draws, knobs, smooth_h, smooth_w, out):  # pragma: no cover - compiled
    for i in range(images.shape[0]):
        _deform_one(images[i], draws[i], knobs, smooth_h, smooth_w, out[i])


def deform(images: np.ndarray, draws: np.ndarray, params: Deformation = Deformation()) -> np.ndarray:
    """uint8 [b, h, w] -> uint8 [b, h, w]: each image deformed by its own row of `draws`."""
    b, h, w = images.shape
    if draws.shape != (b, draws_per_image((h, w))):
        raise ValueError(f"draws must be [{b}, {draws_per_image((h, w))}], got {draws.shape}")
    out = np.empty((b, h, w), dtype=np.uint8)
    lo, hi = params.scale_range
    knobs = np.array(
        [
            params.max_rotation_deg,
            lo,
            hi,
            params.max_shear,
            params.max_shift,
            params.elastic_alpha,
            params.center_of_mass,
        ],
        dtype=np.float64,
    )
    smooth_h, smooth_w = (
        _smoothing_matrix(h, params.elastic_sigma),
        _smoothing_matrix(w, params.elastic_sigma),
    )
    _deform_batch(
        np.ascontiguousarray(images),
        np.ascontiguousarray(draws, dtype=np.float64),
        knobs,
        smooth_h,
        smooth_w,
        out,
    )
    return out
