"""The bundled medical VQA samples: original rows in the schemas of SLAKE, VQA-RAD, PathVQA and PMC-VQA, each about a
generated image whose answer follows from what is drawn (which side of the image a bright lesion lies on, how many
nodules there are, whether a stained region is dark or pale), so that a tiny vision-language model can be shown to
read the image: with the image blanked the answers are a coin toss. Drawn, not photographed: nothing here is a
patient's image, and nothing here is medical.

    python -m kit.vqa_samples   # rewrites kit/samples/{slake,vqa_rad,path_vqa,pmc_vqa}{,_test}.jsonl and their images
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .runs import SAMPLES_DIR

SIZE = 64  # pixels a side: 2 × 2 merged tokens of the tiny vision tower (16-pixel patches); a real model resizes


def scan(side: str, nodules: int, rng: random.Random):
    """A grey 'scan': a body outline, one bright lesion in the given half of the image, and `nodules` small bright
    dots in the other half."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (SIZE, SIZE), 12)
    d = ImageDraw.Draw(im)
    d.ellipse((4, 6, SIZE - 4, SIZE - 6), fill=70)
    r = rng.randint(6, 9)
    cx = rng.randint(12, SIZE // 2 - 10) if side == "left" else rng.randint(SIZE // 2 + 10, SIZE - 12)
    cy = rng.randint(18, SIZE - 18)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=235)
    other = range(SIZE // 2 + 4, SIZE - 10) if side == "left" else range(10, SIZE // 2 - 4)
    for k in range(nodules):
        x, y = rng.choice(list(other)), 14 + k * 14 + rng.randint(-2, 2)
        d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=200)
    return im.convert("RGB")


def slide(dark: bool, rng: random.Random):
    """A 'pathology slide': pink tissue with one stained region, dark or pale."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (SIZE, SIZE), (236, 200, 214))
    d = ImageDraw.Draw(im)
    for _ in range(30):  # nuclei-like speckles, present in both kinds
        x, y = rng.randrange(SIZE), rng.randrange(SIZE)
        d.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(150, 90, 160))
    r = rng.randint(12, 18)
    cx, cy = rng.randint(r + 2, SIZE - r - 2), rng.randint(r + 2, SIZE - r - 2)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(70, 20, 90) if dark else (250, 240, 245))
    return im


SLAKE_EN = [("Is the lesion on the left side of the image?", lambda s, n: "Yes" if s == "left" else "No", "CLOSED"),
            ("Is the lesion on the right side of the image?", lambda s, n: "Yes" if s == "right" else "No", "CLOSED"),
            ("Which side of the image is the lesion on?", lambda s, n: s.capitalize(), "OPEN"),
            ("How many nodules are there?", lambda s, n: str(n), "OPEN")]
SLAKE_ZH = [("病灶位于图像的左侧吗？", lambda s, n: "是" if s == "left" else "否", "CLOSED"),
            ("病灶位于图像的右侧吗？", lambda s, n: "是" if s == "right" else "否", "CLOSED"),
            ("病灶位于图像的哪一侧？", lambda s, n: "左侧" if s == "left" else "右侧", "OPEN"),
            ("图中有几个结节？", lambda s, n: str(n), "OPEN")]
RAD = [("is the mass on the left side of the image?", lambda s, n: "yes" if s == "left" else "no"),
       ("is the mass on the right side of the image?", lambda s, n: "yes" if s == "right" else "no"),
       ("is there more than one nodule?", lambda s, n: "yes" if n > 1 else "no"),
       ("where is the mass?", lambda s, n: f"{s} side of the image")]
PATH = [("is the stained region dark?", lambda dark: "yes" if dark else "no"),
        ("is the stained region pale?", lambda dark: "no" if dark else "yes"),
        ("how does the stained region appear?", lambda dark: "dark" if dark else "pale")]


def write(folder: Path = SAMPLES_DIR, images: int = 40, seed: int = 0, suffix: str = "") -> dict[str, int]:
    """Write the four samples and their images (`images` scans, shared by SLAKE, VQA-RAD and PMC-VQA as the real sets
    share images across questions, and as many slides); rows written per sample."""
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {"slake": [], "vqa_rad": [], "path_vqa": [], "pmc_vqa": []}
    for i in range(images):
        side, nodules = ("left", "right")[i % 2], 1 + (i // 2) % 3
        name = f"synth{i:03d}"
        im = scan(side, nodules, rng)
        (folder / f"slake{suffix}" / "imgs" / name).mkdir(parents=True, exist_ok=True)
        im.save(folder / f"slake{suffix}" / "imgs" / name / "source.png")
        lang_rows = SLAKE_EN if i % 4 < 2 else SLAKE_ZH  # half the images asked in English, half in Chinese
        for q, a, kind in lang_rows:
            rows["slake"].append({
                "img_id": i, "img_name": f"{name}/source.png", "question": q, "answer": a(side, nodules),
                "q_lang": "en" if lang_rows is SLAKE_EN else "zh", "location": "Chest" if lang_rows is SLAKE_EN else "胸部",
                "modality": "CT", "answer_type": kind, "base_type": "vqa", "content_type": "Position" if "侧" in q or "side" in q
                else "Quantity", "triple": ["vhead", "_", "_"], "qid": len(rows["slake"])})
        (folder / f"vqa_rad{suffix}" / "images").mkdir(parents=True, exist_ok=True)
        im.save(folder / f"vqa_rad{suffix}" / "images" / f"rad{i:03d}.png")
        for q, a in RAD:
            rows["vqa_rad"].append({"image": {"bytes": None, "path": f"images/rad{i:03d}.png"}, "question": q,
                                    "answer": a(side, nodules)})
        (folder / f"pmc_vqa{suffix}" / "images").mkdir(parents=True, exist_ok=True)
        im.save(folder / f"pmc_vqa{suffix}" / "images" / f"PMCsynth{i:03d}_F1.png")
        choices = ["Left side of the image", "Right side of the image", "Both sides", "Neither side"]
        order = rng.sample(range(4), 4)
        gold = "ABCD"[order.index(0 if side == "left" else 1)]
        rows["pmc_vqa"].append({"Figure_path": f"PMCsynth{i:03d}_F1.png", "Question": "Where is the bright lesion?",
                                "Answer": choices[0 if side == "left" else 1],
                                **{f"Choice {x}": f"{x}:{choices[order[k]]}" for k, x in enumerate("ABCD")},
                                "Answer_label": gold})
        dark = i % 2 == 0
        (folder / f"path_vqa{suffix}" / "images").mkdir(parents=True, exist_ok=True)
        slide(dark, rng).save(folder / f"path_vqa{suffix}" / "images" / f"slide{i:03d}.png")
        for q, a in PATH:
            rows["path_vqa"].append({"image": {"bytes": None, "path": f"images/slide{i:03d}.png"}, "question": q,
                                     "answer": a(dark)})
    for name, sample in rows.items():
        with (folder / f"{name}{suffix}.jsonl").open("w", encoding="utf-8") as f:
            for r in sample:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {k + suffix: len(v) for k, v in rows.items()}


if __name__ == "__main__":
    # the test split: other images (another seed), as SLAKE's test.json is; the paired image-or-blank check reads it
    print(write(), write(images=16, seed=1, suffix="_test"))
