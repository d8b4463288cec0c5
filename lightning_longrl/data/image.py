"""Reading still images for image questions: upright (EXIF orientation applied), RGB, resized to
the same pixel budget and size multiple as video frames (:class:`FrameSampling`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lightning_longrl.data.video import FrameSampling, fit_frame_size, resize_frames


class ImageDecodeError(RuntimeError):
    """An image file could not be read; the message names the file and why."""


def read_image(path: str | Path, sampling: FrameSampling) -> np.ndarray:
    """One image as ``[H, W, 3]`` uint8, H and W multiples of ``sampling.size_multiple`` within
    ``sampling``'s pixel budget (aspect ratio kept).

    Phone photos store their orientation in EXIF and their pixels sideways; the image is turned
    upright first, as viewers show it. Palette, grey, CMYK and alpha images become RGB (alpha on
    white would invent a background, so the alpha channel is dropped, as Qwen's processor does).

    Raises:
        ImageDecodeError: the file is missing, not an image, truncated, or of an impossible shape.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            pixels = np.array(image.convert("RGB"))
    except FileNotFoundError:
        raise ImageDecodeError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ImageDecodeError(f"{path}: empty image ({width}x{height})")
    try:
        size = fit_frame_size(height, width, sampling)
    except ValueError as err:
        raise ImageDecodeError(f"{path}: {err}") from None
    return resize_frames(pixels[None], size)[0]
