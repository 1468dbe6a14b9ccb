"""Images as the OpenAI API carries them (`image_url` parts: base64 data URLs or http(s) URLs), read and
checked in one place, for the demo, the server and the export's check of a vision projector."""

from __future__ import annotations

import base64
import io
import urllib.request
from pathlib import Path

FETCH_TIMEOUT_S = 10


def read(url: str):
    """The image a data URL or an http(s) URL (fetched with a time limit) holds, as an RGB Pillow image;
    a ValueError saying why when it holds none."""
    from PIL import Image

    if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
        raise ValueError("must be a data: or http(s): URL")
    try:
        if url.startswith("data:"):
            data = base64.b64decode(url.split(",", 1)[1])
        else:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as f:
                data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as e:
        raise ValueError(f"is not an image that can be read ({type(e).__name__}: {e})") from None


def data_url(image) -> str:
    """A Pillow image as a PNG data URL."""
    png = io.BytesIO()
    image.save(png, format="PNG")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()


def file_part(path: str | Path) -> dict:
    """An image file as an OpenAI `image_url` content part; a ValueError naming the file when it is none."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except Exception as e:
        raise ValueError(f"{Path(path).name} is not an image that can be read ({type(e).__name__})") from None
    return {"type": "image_url", "image_url": {"url": data_url(image)}}
