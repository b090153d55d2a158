"""What an attribution map holds that decides how ordering metrics can score it: ties and constant maps."""

from __future__ import annotations

import numpy as np


def tie_shares(attributions: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: `tie_share`, the share of pixels whose value another pixel of the map shares;
    `min_share`, the share at the map's minimum; `constant`, whether the whole map is one value.

    A map of N images (N, C, H, W) is read as pixels of its first channel when C == 1, else as all C*H*W features.
    """
    flat = attributions.reshape(len(attributions), -1)
    ordered = np.sort(flat, axis=1)
    equal_next = ordered[:, 1:] == ordered[:, :-1]
    # A pixel is tied when it equals its neighbour on either side in sorted order.
    tied = np.zeros_like(ordered, dtype=bool)
    tied[:, 1:] |= equal_next
    tied[:, :-1] |= equal_next
    return {
        "tie_share": tied.mean(axis=1),
        "min_share": (flat == ordered[:, :1]).mean(axis=1),
        "constant": ordered[:, -1] <= ordered[:, 0],
    }
