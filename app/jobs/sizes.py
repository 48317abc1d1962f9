"""Output sizes: every aspect ratio maps to one size near one megapixel, sides multiples of 32.

| ratio | size      | megapixels | ratio error |
|-------|-----------|------------|-------------|
| 1:1   | 1024x1024 | 1.049      | 0.00 %      |
| 16:9  | 1344x768  | 1.032      | 1.56 %      |
| 9:16  | 768x1344  | 1.032      | 1.56 %      |
| 3:2   | 1248x832  | 1.038      | 0.00 %      |
| 2:3   | 832x1248  | 1.038      | 0.00 %      |
| 4:3   | 1152x864  | 0.995      | 0.00 %      |
| 3:4   | 864x1152  | 0.995      | 0.00 %      |
| 5:4   | 1120x896  | 1.004      | 0.00 %      |
| 4:5   | 896x1120  | 1.004      | 0.00 %      |

``custom`` sizes are rounded to the nearest multiple of 32 and must fall in 256..2048.
``match_input_image`` takes the first input image's ratio when its size is known (a data URL),
else 1:1.
"""

from __future__ import annotations

ASPECT_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:3": (1152, 864),
    "3:4": (864, 1152),
    "5:4": (1120, 896),
    "4:5": (896, 1120),
}
MIN_SIDE, MAX_SIDE, STEP = 256, 2048, 32


def round_to_step(value: int) -> int:
    """Nearest multiple of 32, halves rounding up (as the upstreams document)."""
    return ((value + STEP // 2) // STEP) * STEP


def size_matching(width: int, height: int) -> tuple[int, int]:
    """A ~1 MP size with the ratio of ``width``:``height``, sides multiples of 32 in range."""
    ratio = width / height
    target = 1024 * 1024
    h = (target / ratio) ** 0.5
    w = h * ratio
    return _clamp(w), _clamp(h)


def _clamp(value: float) -> int:
    return min(MAX_SIDE, max(MIN_SIDE, round_to_step(round(value))))
