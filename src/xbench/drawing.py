"""Pictures of attributions, drawn on the presentation side from the raw arrays a `CellResult` references: the
MLflow store draws them when it logs a result, the leaderboard when it builds its gallery. Nothing here runs inside
execution, and nothing imports torch.

Images are (N, H, W, 3) floats in [0, 1]; attributions are (N, 1, H, W).
"""

from __future__ import annotations

import io

import numpy as np

HEATMAP_IMAGES = 8
GALLERY_IMAGES = 4
OCCLUSION_TOP_FRACTION = 0.10  # the seed paper's top-10 % occlusion maps


def scaled(heat: np.ndarray) -> np.ndarray:
    span = float(heat.max() - heat.min())
    return (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A jet heatmap over the image (half and half)."""
    import matplotlib

    return (0.5 * image + 0.5 * matplotlib.colormaps["jet"](scaled(heat))[..., :3]).clip(0, 1)


def occlusion(image: np.ndarray, heat: np.ndarray, top_fraction: float = OCCLUSION_TOP_FRACTION) -> np.ndarray:
    """The image with everything but its `top_fraction` most relevant pixels greyed out (all grey for a flat map)."""
    threshold = np.quantile(heat, 1 - top_fraction)
    keep = (heat >= threshold)[..., None] if heat.max() > heat.min() else np.zeros_like(heat[..., None], dtype=bool)
    return np.where(keep, image, 0.5)


def png(pixels: np.ndarray) -> bytes:
    import matplotlib.image

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, pixels.clip(0, 1), format="png")
    return buffer.getvalue()


def gallery_strips(images: np.ndarray, attributions: np.ndarray) -> dict[str, bytes]:
    """The leaderboard gallery's two views of the first images, as the seed paper showed them to people."""
    count = min(GALLERY_IMAGES, len(attributions))
    overlays = [overlay(images[i], attributions[i, 0]) for i in range(count)]
    occlusions = [occlusion(images[i], attributions[i, 0]) for i in range(count)]
    return {
        "gallery_overlay.png": png(np.concatenate(overlays, axis=1)),
        "gallery_occlusion.png": png(np.concatenate(occlusions, axis=1)),
    }


def heatmap_grid(images: np.ndarray, attributions: np.ndarray, titles: list[str], title: str) -> bytes:
    """The first images (top) and their attributions as jet overlays (bottom), as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(HEATMAP_IMAGES, len(attributions))
    figure, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.6), squeeze=False)
    for column in range(count):
        axes[0, column].imshow(images[column])
        axes[0, column].set_title(titles[column], fontsize=8)
        axes[1, column].imshow(images[column])
        axes[1, column].imshow(scaled(attributions[column, 0]), cmap="jet", alpha=0.5)
        for row in (0, 1):
            axes[row, column].axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=80, format="png")
    plt.close(figure)
    return buffer.getvalue()
