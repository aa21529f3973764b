"""Small fundus-like RGB images written to disk, for quickstarts and tests that need no download.

Half of the patients (even ids) are drawn procedurally: a black background, a circular field of view, an
orange-red retina darker towards the rim, a darker macula, a bright optic disc and dark vessels branching from the
disc (disc on the left of the image for a left eye, on the right for a right eye). The other half (odd ids) are
augmented views of ``skimage.data.retina()``, a real colour fundus photograph that ships with scikit-image: random
rotation, zoom, shift, mirroring for right eyes and colour jitter. Every image gets a random multi-hot
label over the ODIR classes N, D, G, C, A, H, M, O with a visible trace of each finding (red dots and yellow
exudates for D, a large pale cup for G, haze for C, yellow drusen near the macula for A, thin vessels for H, a pale
tessellated retina for M, a dark patch for O), so conditional models have something to learn.

Items follow the ODIR datalist (:mod:`medvq.data.odir`): ``{"image", "patient_id", "eye", "label", "keywords"}``;
images ``2k`` and ``2k + 1`` are the left and right eye of patient ``k``, so :func:`medvq.data.odir.split_datalist`
splits them by patient. Image ``i`` depends only on ``(seed, i)``: the first images of a longer dataset are the
images of a shorter one. Limitations: the retina-based images need scikit-image's bundled ``retina.jpg`` (present
in its wheels); the drawings are caricatures, fit for smoke tests and codebook-usage studies, not for clinical claims.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from medvq.data.odir import CLASS_NAMES, CLASSES

__all__ = ["make_fundus_dataset"]

logger = logging.getLogger(__name__)

_FORMATS = {"png": "PNG", "jpg": "JPEG"}
# probability that a non-normal image shows each finding D, G, C, A, H, M, O (roughly ODIR's ranking)
_FINDING_PROB = np.array([0.45, 0.15, 0.15, 0.15, 0.1, 0.12, 0.2])


@functools.lru_cache(maxsize=4)
def _retina(size: int) -> Image.Image:
    """``skimage.data.retina()`` (1411 x 1411) cropped to its field of view and resized to ``size`` (cached)."""
    from skimage import data

    array = data.retina()  # (H, W, 3) uint8
    rows = np.flatnonzero(array.mean(axis=(1, 2)) > 5)
    cols = np.flatnonzero(array.mean(axis=(0, 2)) > 5)
    array = array[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Image.fromarray(array).resize((size, size), Image.Resampling.LANCZOS)


def _random_label(rng: np.random.Generator) -> list[float]:
    label = np.zeros(len(CLASSES))
    if rng.random() < 0.4:
        label[0] = 1.0  # N alone
    else:
        findings = rng.random(len(_FINDING_PROB)) < _FINDING_PROB
        if not findings.any():
            findings[rng.integers(len(_FINDING_PROB))] = True
        label[1:] = findings
    return label.tolist()


def _vessels(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    disc: tuple[float, float],
    size: int,
    eye: str,
    colour: tuple[int, int, int],
    width: float,
) -> None:
    """Four arcades leave the disc (up / down, towards the macula and away), each a random walk that branches."""
    toward_macula = 1.0 if eye == "left" else -1.0  # the disc sits on the nasal side, the macula temporal
    stack = []
    for vertical in (-1.0, 1.0):
        for horizontal, length in ((toward_macula, 0.55), (-toward_macula, 0.3)):
            angle = math.atan2(vertical * rng.uniform(0.6, 1.2), horizontal)
            stack.append((disc[0], disc[1], angle, length * size, width, 0))
    while stack:
        x, y, angle, length, w, depth = stack.pop()
        steps = max(2, int(length / (0.04 * size)))
        for _ in range(steps):
            angle += rng.normal(0.0, 0.25)
            nx = x + math.cos(angle) * length / steps
            ny = y + math.sin(angle) * length / steps
            draw.line([(x, y), (nx, ny)], fill=colour, width=max(1, round(w)))
            x, y = nx, ny
            if depth < 2 and rng.random() < 0.25:
                stack.append(
                    (x, y, angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.9), length * 0.45, w * 0.7, depth + 1)
                )


def _procedural(
    rng: np.random.Generator, size: int, eye: str, label: list[float]
) -> tuple[Image.Image, float, tuple[float, float]]:
    """A drawn fundus; returns the image (field of view not yet masked), the radius and the centre of the field."""
    centre = (size / 2 + rng.normal(0, 0.02 * size), size / 2 + rng.normal(0, 0.02 * size))
    radius = size * rng.uniform(0.42, 0.48)
    base = np.array([rng.uniform(170, 230), rng.uniform(60, 110), rng.uniform(20, 50)])  # orange-red retina
    if label[CLASSES.index("M")]:
        base = base * [1.05, 1.25, 1.4]  # pale, thin retina of pathological myopia
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    rho = np.hypot(xx - centre[0], yy - centre[1]) / radius  # (H, W), 0 at the centre, 1 at the rim
    shade = 1.0 - 0.45 * np.clip(rho, 0, 1) ** 2  # darker towards the rim
    macula_x = centre[0] + (0.12 if eye == "left" else -0.12) * size
    shade = shade * (1.0 - 0.3 * np.exp(-((xx - macula_x) ** 2 + (yy - centre[1]) ** 2) / (2 * (0.06 * size) ** 2)))
    if label[CLASSES.index("M")]:
        shade = shade * (1.0 + 0.08 * np.sin(xx * 0.9) * np.sin(yy * 0.7))  # tessellation
    array = np.clip(base[None, None, :] * shade[..., None] + rng.normal(0, 4, (size, size, 3)), 0, 255)
    image = Image.fromarray(array.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    disc = (
        centre[0] + (-0.22 if eye == "left" else 0.22) * size + rng.normal(0, 0.02 * size),
        centre[1] + rng.normal(0, 0.03 * size),
    )
    thin = label[CLASSES.index("H")]
    _vessels(
        draw,
        rng,
        disc,
        size,
        eye,
        (int(base[0] * 0.55), int(base[1] * 0.3), int(base[2] * 0.3)),
        (0.012 if thin else 0.025) * size,
    )
    r_disc = size * rng.uniform(0.06, 0.08)
    draw.ellipse([disc[0] - r_disc, disc[1] - r_disc, disc[0] + r_disc, disc[1] + r_disc], fill=(250, 200, 140))
    r_cup = r_disc * (0.8 if label[CLASSES.index("G")] else 0.4)  # a large cup is the sign of glaucoma
    draw.ellipse([disc[0] - r_cup, disc[1] - r_cup, disc[0] + r_cup, disc[1] + r_cup], fill=(255, 235, 200))
    return image, radius, centre


def _augmented_retina(rng: np.random.Generator, size: int, eye: str) -> tuple[Image.Image, float, tuple[float, float]]:
    """A random view of ``skimage.data.retina()`` (its disc is on the left, as in a left eye; mirrored for a right)."""
    zoom = rng.uniform(1.0, 1.4)  # > 1 crops into the field of view
    source = _retina(2 * size)
    image = source.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR)
    crop = 2 * size / zoom
    offset = rng.uniform(-0.9, 0.9, 2) * (2 * size - crop) / 2  # the crop box stays inside the source
    left, top = (2 * size - crop) / 2 + offset[0], (2 * size - crop) / 2 + offset[1]
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + crop, top + crop))
    if eye == "right":
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    gains = rng.uniform(0.85, 1.15, 3)
    image = Image.merge(
        "RGB", [band.point(lambda v, g=g: min(255, int(v * g))) for band, g in zip(image.split(), gains)]
    )
    radius = 0.5 * size * zoom  # the original field of view fills the source square
    centre = (size / 2 - offset[0] * size / crop, size / 2 - offset[1] * size / crop)
    return image, radius, centre


def _lesions(
    image: Image.Image,
    rng: np.random.Generator,
    label: list[float],
    radius: float,
    centre: tuple[float, float],
    eye: str,
) -> Image.Image:
    """Visible traces of the findings in ``label`` (drawn over either kind of image)."""
    size = image.width
    draw = ImageDraw.Draw(image)

    def spots(count: int, spread: float, colour: tuple[int, int, int], r: float, around: tuple[float, float]) -> None:
        for _ in range(count):
            a, d = rng.uniform(0, 2 * math.pi), spread * radius * math.sqrt(rng.random())
            x, y = around[0] + d * math.cos(a), around[1] + d * math.sin(a)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)

    dot = max(1.0, 0.012 * size)
    macula = (centre[0] + (0.12 if eye == "left" else -0.12) * size, centre[1])
    if label[CLASSES.index("D")]:
        spots(int(rng.integers(4, 10)), 0.8, (120, 10, 10), dot, centre)  # haemorrhages
        spots(int(rng.integers(2, 6)), 0.6, (240, 220, 90), dot, centre)  # hard exudates
    if label[CLASSES.index("A")]:
        spots(int(rng.integers(4, 9)), 0.25, (235, 215, 120), dot, macula)  # drusen
    if label[CLASSES.index("O")]:
        spots(1, 0.6, (40, 20, 15), 0.06 * size, centre)  # a dark patch (scar, occlusion, ...)
    if label[CLASSES.index("C")]:
        image = image.filter(ImageFilter.GaussianBlur(0.03 * size))  # cataract: a hazy view
        image = ImageEnhance.Contrast(image).enhance(0.7)
    return image


def _mask_field_of_view(image: Image.Image, radius: float, centre: tuple[float, float]) -> Image.Image:
    size = image.width
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inside = np.hypot(xx - centre[0], yy - centre[1]) <= min(radius, 0.5 * size)  # (H, W)
    array = np.asarray(image).copy()
    array[~inside] = 0
    return Image.fromarray(array)


def make_fundus_dataset(
    output_dir: str | os.PathLike,
    num_images: int = 32,
    image_size: int = 64,
    seed: int = 0,
    image_format: str = "png",
) -> list[dict[str, Any]]:
    """Write ``num_images`` fundus-like RGB images and return their datalist items.

    Patients with an even id (images 0, 1, 4, 5, ...) are procedural drawings, the others augmented views of
    ``skimage.data.retina()`` (module docstring). About 40 % of the labels are N alone; the others hold one or
    more findings.

    Args:
        output_dir: folder for the images (created); files are ``synthetic_<index>_<eye>.<image_format>`` and are
            overwritten.
        num_images: number of images, >= 1; default 32.
        image_size: side of the square images in pixels, >= 16; default 64.
        seed: the dataset is a pure function of ``(seed, index)``; default 0.
        image_format: ``"png"`` (lossless, default) or ``"jpg"`` (quality 95, like real fundus archives).

    Returns:
        Items ``{"image": absolute path, "patient_id": index // 2, "eye": "left" | "right", "label": 8 floats
        multi-hot over N, D, G, C, A, H, M, O, "keywords": str}`` in index order.

    Raises:
        ValueError: a bad ``num_images``, ``image_size`` or ``image_format`` (the message names it).

    Example:
        >>> items = make_fundus_dataset("/tmp/fundus", num_images=8)  # doctest: +SKIP
        >>> items[0]["image"], items[0]["label"]  # doctest: +SKIP
    """
    for name, value, low in (("num_images", num_images, 1), ("image_size", image_size, 16)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}.")
    out = Path(output_dir).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])  # per image: independent of num_images
        eye = "left" if index % 2 == 0 else "right"
        label = _random_label(rng)
        if index % 4 < 2:
            image, radius, centre = _procedural(rng, image_size, eye, label)
        else:
            image, radius, centre = _augmented_retina(rng, image_size, eye)
        image = _mask_field_of_view(_lesions(image, rng, label, radius, centre, eye), radius, centre)
        path = out / f"synthetic_{index:04d}_{eye}.{image_format}"
        save_kwargs = {"quality": 95} if image_format == "jpg" else {}
        image.save(path, format=_FORMATS[image_format], **save_kwargs)
        keywords = "，".join(("normal fundus" if c == "N" else CLASS_NAMES[c]) for c, v in zip(CLASSES, label) if v)
        items.append({"image": str(path), "patient_id": index // 2, "eye": eye, "label": label, "keywords": keywords})
    logger.info("wrote %d synthetic fundus images of %d px to '%s'", num_images, image_size, out)
    return items
