"""Write the PNGs of `tiny_gans/shapes/`: 8x8 grayscale images of four shapes (a bar across, a
bar down, a box, a cross) at a few offsets, the folder the example's `png-shapes` dataset reads.

    python examples/make_shapes.py            # rewrites examples/tiny_gans/shapes/*.png

The images are drawn from integers alone, so every run writes the same bytes.
"""

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 8
FOLDER = Path(__file__).parent / "tiny_gans" / "shapes"


def shapes() -> dict[str, np.ndarray]:
    """name -> 8x8 uint8 image, one per shape and offset."""
    drawn = {}
    for offset in range(1, 6):
        for name in ("across", "down", "box", "cross"):
            image = np.zeros((SIDE, SIDE), dtype=np.uint8)
            if name == "across":
                image[offset, 1:7] = 255
            elif name == "down":
                image[1:7, offset] = 255
            elif name == "box":
                image[offset : offset + 3, offset : offset + 3] = 255  # 3x3, on the diagonal
            else:
                image[offset, :] = 255
                image[:, SIDE - 1 - offset] = 255
            drawn[f"{name}-{offset}"] = image
    return drawn


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for old in FOLDER.glob("*.png"):
        old.unlink()
    for name, image in shapes().items():
        Image.fromarray(image).save(FOLDER / f"{name}.png", optimize=False)
    print(f"{len(shapes())} PNGs in {FOLDER}")


if __name__ == "__main__":
    main()
