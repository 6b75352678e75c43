"""Sample grids a reader can judge: tiles upscaled (nearest, so no detail is invented) and, when the run is
evaluated, each tile captioned with the class the evaluation classifier assigns to it."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_write_bytes

TILE_SCALE = 3          # 32 px images become 96 px tiles
CAPTION_HEIGHT = 14
PAD = 2


def sample_sheet_image(images_u8: torch.Tensor, captions: list[str] | None = None, scale: int = TILE_SCALE) -> Image.Image:
    """uint8 (N, C, H, W) images as one RGB grid, nrow = ceil(sqrt(N)), with an optional caption under each."""
    n, c, h, w = images_u8.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    tile_w, tile_h = w * scale, h * scale + (CAPTION_HEIGHT if captions else 0)
    canvas = Image.new("RGB", (cols * (tile_w + PAD) + PAD, rows * (tile_h + PAD) + PAD), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i in range(n):
        array = images_u8[i].permute(1, 2, 0).cpu().numpy()
        if c == 1:
            array = np.repeat(array, 3, axis=2)
        tile = Image.fromarray(array, "RGB").resize((w * scale, h * scale), Image.NEAREST)
        x, y = PAD + (i % cols) * (tile_w + PAD), PAD + (i // cols) * (tile_h + PAD)
        canvas.paste(tile, (x, y))
        if captions:
            text = captions[i]
            while draw.textlength(text, font=font) > tile_w - 2 and len(text) > 1:
                text = text[:-1]
            draw.text((x + 1, y + h * scale + 1), text, fill=(0, 0, 0), font=font)
    return canvas


def save_sample_sheet(images_u8: torch.Tensor, path: Path, captions: list[str] | None = None) -> None:
    import io
    buffer = io.BytesIO()
    sample_sheet_image(images_u8, captions).save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
