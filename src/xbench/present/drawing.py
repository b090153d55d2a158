"""Pictures of attributions, drawn on the presentation side from the raw arrays a `CellResult` references: `xbench
run` hands `cell_pictures` to the store, which logs them beside each result for the MLflow UI; the leaderboard draws
its gallery. Nothing here runs inside
execution, and nothing imports torch.

Images are (N, H, W, 3) floats in [0, 1]; attributions are (N, 1, H, W).
"""

from __future__ import annotations

import io

import numpy as np

from xbench.core.results import CellResult
from xbench.core.suite import DEFAULT_GALLERY_IMAGES

HEATMAP_IMAGES = 8
OCCLUSION_TOP_FRACTION = 0.10  # the seed paper's top-10 % occlusion maps


def scaled(heat: np.ndarray) -> np.ndarray:
    span = float(heat.max() - heat.min())
    return (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A jet heatmap over the image (half and half)."""
    import matplotlib

    overlay: np.ndarray = (0.5 * image + 0.5 * matplotlib.colormaps["jet"](scaled(heat))[..., :3]).clip(0, 1)
    return overlay


def occlusion(image: np.ndarray, heat: np.ndarray, top_fraction: float = OCCLUSION_TOP_FRACTION) -> np.ndarray:
    """The image with everything but its `top_fraction` most relevant pixels greyed out (all grey for a flat map)."""
    threshold = np.quantile(heat, 1 - top_fraction)
    keep = (heat >= threshold)[..., None] if heat.max() > heat.min() else np.zeros_like(heat[..., None], dtype=bool)
    return np.where(keep, image, 0.5)


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((pixels.clip(0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def gallery_strips(images: np.ndarray, attributions: np.ndarray) -> dict[str, bytes]:
    """The leaderboard gallery's two views of the first images, as the seed paper showed them to people."""
    count = min(DEFAULT_GALLERY_IMAGES, len(attributions))
    overlays = [overlay(images[i], attributions[i, 0]) for i in range(count)]
    occlusions = [occlusion(images[i], attributions[i, 0]) for i in range(count)]
    return {
        "gallery_overlay.png": png(np.concatenate(overlays, axis=1)),
        "gallery_occlusion.png": png(np.concatenate(occlusions, axis=1)),
    }


def heatmap_grid(images: np.ndarray, attributions: np.ndarray, titles: list[str], title: str) -> bytes:
    """The first images (top) and their attributions as jet overlays (bottom), each captioned, under a title, as one
    PNG. Composed with PIL: a matplotlib figure of 16 axes took about 0.5 s of CPU per cell, on the driver that logs
    every cell (it capped how far Ray workers scale)."""
    from PIL import Image, ImageDraw

    count = min(HEATMAP_IMAGES, len(attributions))
    cell, caption, header, gap = 112, 14, 18, 4
    width = count * (cell + gap) + gap
    canvas = Image.new("RGB", (width, header + 2 * (cell + caption) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 3), title, fill="black")
    for column in range(count):
        x = gap + column * (cell + gap)
        draw.text((x, header), titles[column][:18], fill="black")
        for row, pixels in enumerate((images[column], overlay(images[column], attributions[column, 0]))):
            picture = Image.fromarray((pixels.clip(0, 1) * 255).round().astype(np.uint8))
            y = header + caption + row * (cell + caption)
            canvas.paste(picture.resize((cell, cell), Image.Resampling.NEAREST), (x, y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)  # fast; these pictures are small either way
    return buffer.getvalue()


def cell_pictures(result: CellResult, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """What people see of a cell in the MLflow UI: `heatmaps.png` and the two gallery strips (none without gallery)."""
    if not {"gallery_images", "gallery_attributions"} <= set(arrays):
        return {}
    images = arrays["gallery_images"].astype(np.float64) / 255
    attributions = arrays["gallery_attributions"]
    titles = [result.class_names[result.labels[index]] for index in result.scored_images[: len(images)]]
    return {
        "heatmaps.png": heatmap_grid(images, attributions, titles, result.cell.label),
        **gallery_strips(images, attributions),
    }
