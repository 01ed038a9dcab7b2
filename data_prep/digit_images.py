"""Any picture of one digit in MNIST's format, prepared the way the database was made.

LeCun, Cortes and Burges describe MNIST's digits as size-normalised to fit a 20x20 box keeping their
aspect ratio (anti-aliased, hence grey levels), then centred in a 28x28 field by their center of mass.
`to_mnist_format` does the same to a picture a user draws or scans: transparency composited (a
transparent background would otherwise read as black, and so would the ink), dark ink on a light
background inverted to MNIST's light-on-dark, the background level taken off, cropped to the ink,
scaled into the box, placed by its center of mass. A picture already in the model's shape is only
composited and inverted: it is taken to be in MNIST's format (its own test images, exported as PNGs,
then give exactly their stored pixels).
May use: numpy, PIL (pillow).
"""

from __future__ import annotations

import numpy as np

# MNIST's box and field: a 20x20 digit in a 28x28 image; other model shapes scale both.
BOX, FIELD = 20, 28
# Pixels at least this share of the brightest ink (after inversion and background removal) count as ink
# for the crop: anti-aliased fringes and scanner noise stay out of the bounding box.
INK_SHARE = 0.1


class BlankImageError(ValueError):
    """The picture holds no ink (a single grey level)."""


def _grey(image) -> np.ndarray:
    """float64 grey levels [h, w] in 0-255, transparency composited against the ink's opposite."""
    bands = image.getbands()
    if "A" in bands or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3] / 255.0
        lum = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        opaque = alpha > 0.5
        dark_ink = not opaque.any() or float(lum[opaque].mean()) < 128
        background = 255.0 if dark_ink else 0.0
        return lum * alpha + background * (1 - alpha)
    return np.asarray(image.convert("L"), dtype=np.float64)


def _border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def to_mnist_format(image, shape: tuple[int, int] = (FIELD, FIELD)) -> tuple[np.ndarray, bool]:
    """(uint8 [h, w] light-on-dark digit in MNIST's format, whether it was inverted) from a PIL image.
    Raises BlankImageError for a picture without ink."""
    grey = _grey(image)
    inverted = bool(np.median(_border(grey)) > 127)  # the border is background: light means dark ink
    if inverted:
        grey = 255.0 - grey
    if grey.shape == tuple(shape):
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8), inverted
    background = float(np.median(_border(grey)))
    ink = np.clip(grey - background, 0, None)
    if ink.max() <= 0:
        raise BlankImageError("no digit found: the image is a single grey level")
    ink *= 255.0 / ink.max()
    rows, cols = np.nonzero(ink >= INK_SHARE * 255.0)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return _centred(_scaled(ink, shape), shape), inverted


def _scaled(ink: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The cropped digit resized (anti-aliased, aspect kept) so that its longer side fills the box."""
    from PIL import Image

    box = max(1, round(min(shape) * BOX / FIELD))
    h, w = ink.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
    resized = Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float64), 0, 255)


def _centred(digit: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The digit placed in a `shape` field with its center of mass at the field's center (kept inside)."""
    h, w = digit.shape
    mass = digit.sum()
    cy = (digit.sum(axis=1) @ np.arange(h)) / mass
    cx = (digit.sum(axis=0) @ np.arange(w)) / mass
    # MNIST's digits have their center of mass at pixel (14, 14) of 28x28 (row and column index, measured
    # on its test images: 13.9-14.4), not at the field's geometric middle (13.5).
    top = int(np.clip(round(shape[0] / 2 - cy), 0, shape[0] - h))
    left = int(np.clip(round(shape[1] / 2 - cx), 0, shape[1] - w))
    field = np.zeros(shape, dtype=np.float64)
    field[top : top + h, left : left + w] = digit
    return np.clip(np.rint(field), 0, 255).astype(np.uint8)
