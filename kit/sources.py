"""Where a recipe's datasets come from: a bundled sample (`bundled:NAME`, the real dataset's schema), a local
file, a file at an address (HealthBench's), or the hub, whose datasets the bundled samples stand in for offline (`data.offline`). The data stage
and lm-evaluation-harness's tasks (kit.benchmarks) read their rows through here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KitError
from .formatting import CONTROL_STRINGS
from .recipe import DatasetSpec
from .runs import SAMPLES_DIR


LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(KitError, ValueError):
    """Data that cannot be used, with the file, row and field that made it so."""


@dataclass
class Checked:
    """A source's usable rows, and the rows dropped: how many per reason, and where each reason was first seen."""

    rows: list[dict]
    dropped: Counter = field(default_factory=Counter)
    first_bad: dict[str, str] = field(default_factory=dict)


def text_reason(row: dict, col: str) -> str | None:
    """Why a row's text field is unusable (missing, not a string, empty), or None."""
    value = row.get(col)
    if value is None:
        return f"missing field '{col}'"
    if not isinstance(value, str):
        return f"field '{col}' is not a string ({type(value).__name__})"
    if not value.strip():
        return f"empty field '{col}'"
    return None


def control_reason(row: dict, cols: list[str]) -> str | None:
    """The drop reason when one of the text fields (or a text value of a mapping field) holds a think tag or a chat
    control token, else None: inside a question, a reasoning or an answer it would teach a broken format."""
    for col in cols:
        values = row[col].values() if isinstance(row[col], dict) else [row[col]]
        for value in values:
            for tag in CONTROL_STRINGS:
                if isinstance(value, str) and tag in value:
                    return f"field '{col}' contains '{tag}'"
    return None


def bundled_file(path: str) -> Path:
    """The file behind `bundled:NAME`, or a DataError listing the bundled samples."""
    local = SAMPLES_DIR / f"{path.split(':', 1)[1]}.jsonl"
    if not local.exists():
        names = ", ".join(sorted(p.stem for p in SAMPLES_DIR.glob("*.jsonl")))
        raise DataError(f"no bundled sample '{path}' (bundled: {names})")
    return local


_HEALTHBENCH = "https://openaipublic.blob.core.windows.net/simple-evals/healthbench/"
HEALTHBENCH = _HEALTHBENCH + "2025-05-07-06-14-12_oss_eval.jsonl"  # 5,000 conversations
HEALTHBENCH_HARD = _HEALTHBENCH + "hard_2025-05-08-21-00-10.jsonl"
HEALTHBENCH_CONSENSUS = _HEALTHBENCH + "consensus_2025-05-09-20-00-46.jsonl"
HEALTHBENCH_META = _HEALTHBENCH + "2025-05-07-06-14-12_oss_meta_eval.jsonl"  # physicians' labels per criterion


def is_url(path: str) -> bool:
    return path.startswith(("https://", "http://"))


# The bundled sample in each hub dataset's schema: (hub id, configuration or split) → sample name.
BUNDLED_FOR = {
    ("FreedomIntelligence/medical-o1-reasoning-SFT", "en"): "medical_o1_sft_en",
    ("FreedomIntelligence/medical-o1-reasoning-SFT", "en_mix"): "medical_o1_sft_en",
    ("FreedomIntelligence/medical-o1-reasoning-SFT", "zh"): "medical_o1_sft_zh",
    ("FreedomIntelligence/medical-o1-reasoning-SFT", "zh_mix"): "medical_o1_sft_zh",
    ("FreedomIntelligence/medical-o1-verifiable-problem", None): "medical_o1_verifiable",
    ("GBaker/MedQA-USMLE-4-options", None): "medqa_4options",
    ("TIGER-Lab/MMLU-Pro", "test"): "mmlu_pro",
    ("TIGER-Lab/MMLU-Pro", "validation"): "mmlu_pro_validation",
    # the datasets behind lm-evaluation-harness's medical tasks (`harness:TASK` sources; kit/benchmarks.py)
    ("li-lab/MMLU-ProX", "en"): "mmlu_prox_en",
    ("li-lab/MMLU-ProX", "zh"): "mmlu_prox_zh",
    ("haonan-li/cmmlu", "clinical_knowledge"): "cmmlu_clinical_knowledge",
    ("haonan-li/cmmlu", "traditional_chinese_medicine"): "cmmlu_traditional_chinese_medicine",
    ("haonan-li/cmmlu", "professional_medicine"): "cmmlu_professional_medicine",
    ("ceval/ceval-exam", "physician"): "ceval_physician",
    ("ceval/ceval-exam", "basic_medicine"): "ceval_basic_medicine",
    ("ceval/ceval-exam", "clinical_medicine"): "ceval_clinical_medicine",
    ("openlifescienceai/medmcqa", None): "medmcqa",
    ("bigbio/pubmed_qa", "pubmed_qa_labeled_fold0_source"): "pubmedqa",
    # HealthBench (openai/simple-evals) is published as JSONL files, not on the hub; each is read from its address
    (HEALTHBENCH, None): "healthbench",
    (HEALTHBENCH_HARD, None): "healthbench",
    (HEALTHBENCH_CONSENSUS, None): "healthbench",
    (HEALTHBENCH_META, None): "healthbench_meta",
    # medical visual question answering (kit/vqa.py): original rows about generated images, in each set's schema
    ("BoKelvin/SLAKE", "test"): "slake_test",
    ("flaviagiammarino/vqa-rad", "test"): "vqa_rad_test",
    ("flaviagiammarino/path-vqa", "test"): "path_vqa_test",
    ("xmcmic/PMC-VQA", "test"): "pmc_vqa_test",
    ("BoKelvin/SLAKE", None): "slake",
    ("flaviagiammarino/vqa-rad", None): "vqa_rad",
    ("flaviagiammarino/path-vqa", None): "path_vqa",
    ("xmcmic/PMC-VQA", None): "pmc_vqa",
}


def image_roots(spec: DatasetSpec, offline: bool = False) -> list[Path]:
    """Folders an image source's relative image paths are read from: a bundled sample's own folder, or the folder
    of a local file (SLAKE's `imgs/`, PMC-VQA's `images/` sit beside their annotation files)."""
    path = offline_path(spec) if offline else spec.path
    if path.startswith("bundled:"):
        return [SAMPLES_DIR / path.split(":", 1)[1]]
    return [] if is_url(path) or Path(path).suffix not in LOCAL_SUFFIXES else [Path(path).resolve().parent]


def offline_path(spec: DatasetSpec) -> str:
    """`bundled:NAME` standing in for a hub dataset (`data.offline`): the sample in its schema. A bundled
    sample or a local file stays as it is.

    >>> offline_path(DatasetSpec("FreedomIntelligence/medical-o1-reasoning-SFT", config="zh"))
    'bundled:medical_o1_sft_zh'
    >>> offline_path(DatasetSpec("TIGER-Lab/MMLU-Pro", split="test"))
    'bundled:mmlu_pro'
    """
    if spec.path.startswith("bundled:") or (Path(spec.path).suffix in LOCAL_SUFFIXES and not is_url(spec.path)):
        return spec.path
    for key in ((spec.path, spec.config), (spec.path, spec.split), (spec.path, None)):
        if key in BUNDLED_FOR:
            return f"bundled:{BUNDLED_FOR[key]}"
    known = ", ".join(sorted({hub for hub, _ in BUNDLED_FOR}))
    raise DataError(f"data.offline: no bundled sample stands in for '{spec.path}' (config {spec.config!r}); the kit "
                    f"bundles samples of {known}. Point the recipe at a local file instead.")


def load_rows(spec: DatasetSpec, offline: bool = False) -> tuple[list[dict], str]:
    """Rows of a bundled sample, a local file, or a hub dataset (its bundled sample when `offline`); and a
    label naming the source."""
    import datasets

    path = offline_path(spec) if offline else spec.path
    if path.startswith("bundled:"):
        ds = datasets.load_dataset("json", data_files=str(bundled_file(path)), split="train")
        label = path if path == spec.path else f"{path} (offline, for {spec.path})"
    elif is_url(path):  # a file published at an address (HealthBench's), read by the datasets library
        try:
            ds = datasets.load_dataset(LOCAL_SUFFIXES.get(Path(path).suffix, "json"), data_files=path, split="train")
        except Exception as e:  # unreachable, moved...
            raise DataError(f"could not read {path}: {type(e).__name__}: {e}\nDownload it once and point the recipe at "
                            f"the local file, or measure the recipe on the kit's bundled samples with "
                            f"--set data.offline=true.") from None
        label = path
    elif Path(path).suffix in LOCAL_SUFFIXES:
        if not Path(path).exists():
            raise DataError(f"data file {path} does not exist")
        ds = datasets.load_dataset(LOCAL_SUFFIXES[Path(path).suffix], data_files=path, split="train")
        label = path
    else:
        try:
            ds = datasets.load_dataset(path, spec.config, split=spec.split)
        except Exception as e:  # hub unreachable, gated, renamed...
            raise DataError(
                f"could not load '{path}' (config {spec.config!r}, split {spec.split!r}) from the hub: "
                f"{type(e).__name__}: {e}\nTo work offline, download it once and point the recipe at the "
                f"file, e.g. --set data.sft='[{{path: /data/medical_o1_en.jsonl}}]' "
                f"(.jsonl, .json, .csv and .parquet are read), or measure the recipe on the kit's bundled samples "
                f"with --set data.offline=true."
            ) from None
        label = f"{path}[{spec.config}]" if spec.config else path
    if spec.where:
        missing = [k for k in spec.where if k not in ds.column_names]
        if missing:
            raise DataError(f"{label}: 'where' names column '{missing[0]}', which it does not have")
        ds = ds.filter(lambda r: all(r[k] == v for k, v in spec.where.items()))
        label += " where " + ", ".join(f"{k}={v}" for k, v in spec.where.items())
    if spec.max_rows is not None:
        ds = ds.select(range(min(spec.max_rows, len(ds))))
    return ds.to_list(), label
