"""Images read and checked in one place: as the OpenAI API carries them (`image_url` parts: base64 data URLs or
http(s) URLs), for the demo, the server and the export's check of a vision projector; as a dataset row holds them
(a Pillow image, bytes, the datasets library's `{"bytes", "path"}`, a path), for the data stage (kit.vqa); and a
short video clip as vLLM takes it (a `video_url` part holding the file as a data URL), for the demo."""

from __future__ import annotations

import base64
import hashlib
import io
import mimetypes
import urllib.request
from pathlib import Path

FETCH_TIMEOUT_S = 10
MAX_IMAGE_SIDE = 8192  # pixels, for a dataset's image; whole-slide pathology needs tiling first, not one image this size
MAX_IMAGE_MB = 64
# where a dataset's relative image paths are found under its folder (SLAKE ships imgs/, PMC-VQA images/)
IMAGE_FOLDERS = ("", "imgs", "images")
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


def open_dataset_image(value, roots: list[Path]):
    """The RGB Pillow image a dataset row holds (a Pillow image, bytes, `{"bytes", "path"}`, or a path relative to one
    of `roots`); a ValueError saying why when it holds none, or one too large."""
    from PIL import Image

    name = None
    if isinstance(value, dict):  # the datasets library's Image feature, undecoded
        name = value.get("path")
        value = value.get("bytes") or value.get("path")
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, (bytes, bytearray)):
        image = _decode(io.BytesIO(value), name or "the image bytes")
    elif isinstance(value, str) and value.strip():
        name = value
        candidates = [Path(value)] if Path(value).is_absolute() else [r / f / value for r in roots for f in IMAGE_FOLDERS]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise ValueError(f"image file {value} not found (looked in {', '.join(sorted({str(p.parent) for p in candidates}))})")
        if path.stat().st_size > MAX_IMAGE_MB * 2**20:
            raise ValueError(f"image file {value} is {path.stat().st_size / 2**20:.0f} MB, above {MAX_IMAGE_MB} MB")
        image = _decode(path, value)
    else:
        raise ValueError(f"holds no image ({type(value).__name__})")
    if max(image.size) > MAX_IMAGE_SIDE:
        raise ValueError(f"image {name or '(bytes)'} is {image.size[0]}×{image.size[1]} pixels, above {MAX_IMAGE_SIDE} "
                         f"on a side: resize or tile it first")
    return image.convert("RGB")


def _decode(source, name: str):
    from PIL import Image

    try:
        image = Image.open(source)
        if max(image.size) > MAX_IMAGE_SIDE:  # read from the header: the pixels are not decoded
            return image
        image.load()
        return image
    except Exception as e:
        raise ValueError(f"image {name} cannot be read ({type(e).__name__}: {e})") from None


def store_png(image, out_dir: Path) -> str:
    """The image written once as PNG under `out_dir/images/`, named by its content (an image that many questions
    share is stored once); its path relative to `out_dir`."""
    png = io.BytesIO()
    image.save(png, format="PNG")
    data = png.getvalue()
    rel = f"images/{hashlib.sha1(data).hexdigest()[:16]}.png"
    if not (out_dir / rel).exists():
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_bytes(data)
    return rel


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
