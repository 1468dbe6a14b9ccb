"""Images as the OpenAI API carries them (`image_url` parts: base64 data URLs or http(s) URLs), read and
checked in one place, for the demo, the server and the export's check of a vision projector; and a short
video clip as vLLM takes it (a `video_url` part holding the file as a data URL), for the demo."""

from __future__ import annotations

import base64
import io
import mimetypes
import urllib.request
from pathlib import Path

FETCH_TIMEOUT_S = 10
MAX_CLIP_MB = 16  # a short clip: it travels base64-encoded inside the request


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


def clip_part(path: str | Path) -> dict:
    """A video file as a `video_url` content part (vLLM's extension of the OpenAI format: the server samples
    its frames); a ValueError naming the file when it is no video or longer than a short clip."""
    path = Path(path)
    kind = mimetypes.guess_type(path.name)[0] or ""
    if not kind.startswith("video/"):
        raise ValueError(f"{path.name} is not a video file (.mp4, .webm, .mov, ...)")
    size_mb = path.stat().st_size / 2**20
    if size_mb > MAX_CLIP_MB:
        raise ValueError(f"{path.name} is {size_mb:.1f} MB; send a clip of at most {MAX_CLIP_MB} MB")
    return {"type": "video_url", "video_url": {"url": f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()}}


def media_part(path: str | Path) -> dict:
    """An uploaded file as a content part: a video clip by its type, else an image."""
    return clip_part(path) if (mimetypes.guess_type(str(path))[0] or "").startswith("video/") else file_part(path)
