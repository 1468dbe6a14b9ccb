"""Recipes: one validated object holding everything a run needs.

A recipe is a YAML file under `kit/recipes/` (or any path). Its sections map to the
dataclasses below; an unknown key anywhere is an error naming the key. The `trainer`
sections hold TRL's own argument names (SFTConfig / GRPOConfig) and are checked against
TRL when the stage builds its config.

    python -m kit recipe tiny --set sft.trainer.max_steps=10
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import KitError

RECIPES_DIR = Path(__file__).parent / "recipes"


class RecipeError(KitError, ValueError):
    """A recipe that cannot be used as written."""


@dataclass
class TinyModelConfig:
    """Shape of the random-init Qwen3.5 text model the kit builds offline."""

    hidden_size: int = 256  # multiple of 256 so llama.cpp K-quants apply
    intermediate_size: int = 512  # multiple of 256, same reason
    num_hidden_layers: int = 2  # one linear-attention + one full-attention layer
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    tokenizer_vocab_size: int = 1536  # byte-level BPE trained on the bundled samples
    # trained: that BPE; qwen3.5: the real Qwen3.5 tokenizer (kit.base_model; 248,320 embedding rows, so
    # ~127M parameters at hidden 256): real ids through every stage
    tokenizer: str = "trained"
    initializer_range: float = 0.02  # std of the random init (Qwen's own value)
    seed: int = 0


@dataclass
class ModelConfig:
    name_or_path: str = "builtin:tiny"  # hub id, local folder, or builtin:tiny
    params_b: float = 0.002  # billions of parameters, as the recipe states them for messages (the estimates count the model's own)
    load_in_4bit: bool = False  # NF4 through Unsloth / bitsandbytes
    max_seq_length: int = 512  # tokens; longer rows are dropped and counted
    dtype: str = "auto"  # auto = bf16 on a GPU that has it, else fp32
    min_gpu_memory_gb: float | None = None  # None = derived by kit.memory from the recipe; 0 = runs on a CPU
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class LoraConfig:
    r: int = 16  # rank: larger = smarter but slower
    alpha: int = 32  # scaling = alpha / r
    dropout: float = 0.0  # Unsloth's fast path wants 0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    modules_to_save: list[str] = field(default_factory=list)  # trained in full (e.g. a random-init head)
    # a vision-language checkpoint (Unsloth's FastVisionModel names): LoRA on the language model, and on the vision
    # tower's blocks and merger only when asked (medical images unlike the tower's pretraining: radiology, pathology)
    finetune_vision_layers: bool = False
    finetune_language_layers: bool = True


@dataclass
class DatasetSpec:
    path: str  # hub id, a local .jsonl/.json/.csv/.parquet file, bundled:NAME, or harness:TASK (an lm-eval task; eval only)
    config: str | None = None  # hub configuration (e.g. en, zh)
    split: str = "train"
    max_rows: int | None = None  # take the first N rows after loading (None = all)
    where: dict | None = None  # keep rows whose columns equal these values, e.g. {category: biology}
    language: str | None = None  # recorded in metrics; informational
    schema: str | None = None  # "mcq": a source in MedQA's multiple-choice schema, as SFT rows ending "The answer is X." or RL problems whose reference is the gold letter; "rubric": rubric rows (RaR-Medicine's or HealthBench's schema), graded by the `rubric` reward in RL and scored HealthBench's way in eval
    task: str | None = None  # eval: the task it scores under (default: medqa, or mmlu_pro_<category> for MMLU-Pro)


@dataclass
class DataConfig:
    sft: list[DatasetSpec] = field(default_factory=list)
    rl: list[DatasetSpec] = field(default_factory=list)
    eval: list[DatasetSpec] = field(default_factory=list)
    val_fraction: float = 0.1  # share of SFT rows held out for validation loss
    seed: int = 42
    num_proc: int = 1  # processes for tokenising; >1 helps above ~10k rows
    # no hub: each hub dataset is read from its bundled sample (same schema), and a Qwen3.5/3.6 checkpoint's
    # tokenizer from the kit's built-in copy, so the real recipes' token lengths are measured on a laptop
    offline: bool = False


@dataclass
class SFTStage:
    format_check_questions: int = 8  # questions SFT never saw, answered before and after: held-out rows, then RL's
    format_check_max_new_tokens: int = 128
    trainer: dict = field(default_factory=dict)  # TRL SFTConfig arguments


@dataclass
class JudgeConfig:
    preset: str = "rule"  # rule | deepseek | openai-compatible
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None  # name of the env var holding the key (never the key)
    max_concurrency: int = 16
    timeout_s: float = 60.0  # per request
    max_retries: int = 4
    incorrect_floor: float = 0.1  # reward for a well-formed wrong answer (HuatuoGPT-o1)
    error_fallback: str = "rule"  # rule = use the rule judge's score; skip = None (TRL ignores it)
    # checks that give a conclusion 0 before the judge sees it (None: all of kit.screen.SCREENS; list fewer to
    # turn one off)
    screen: list[str] | None = None
    max_conclusion_tokens: int | None = 256  # the too_long check: a concise answer is the format (None = no limit)
    # the RL stage refuses to start when the screen would stop more than this share of its own references
    max_screened_references: float = 0.05
    # calibration before training (`kit judge-check`): warn, or refuse where `refuse_gullible`, when the judge
    # pays more than this share of the calibration set's master keys and hedges
    max_paid_attacks: float = 0.05
    refuse_gullible: bool = False
    calibrate: bool = True  # the RL stage's preflight sends the calibration set to a remote judge (cached)
    # a rubric's criteria graded in one request per conclusion (true), or one request per criterion, as
    # HealthBench's grader does (false): fewer requests against each criterion judged on its own
    rubric_batched: bool = True
    # the too_long check for a conclusion graded against a rubric: an answer to a patient's message (HealthBench's
    # conversations) runs to paragraphs, where a reference answer is a line; the hacking watch looks for padding
    rubric_max_conclusion_tokens: int | None = 1024


@dataclass
class RLStage:
    algorithm: str = "gspo"  # gspo (sequence-level ratios) | grpo (token-level)
    max_rows: int | None = None
    reward_weights: dict = field(default_factory=lambda: {"format": 0.2, "judge": 1.0})
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    generation: str = "auto"  # rollouts: auto | vllm | hf (auto = vLLM where installed and the model is supported)
    vllm_mode: str = "colocate"  # colocate (vLLM shares the training GPU) | server (`trl vllm-serve` elsewhere)
    vllm_server_url: str | None = None  # server mode: the `trl vllm-serve` address (none: `kit launch` starts one)
    vllm_server_gpus: int = 1  # server mode under `kit launch`: GPUs the server takes (tensor-parallel), after the training ones
    gpu_memory_utilization: float = 0.5  # colocate: share of the GPU for vLLM's weights + KV cache
    # CPU end, hf rollouts: `train` = TRL's generation on the training model (adapter unmerged, its dtype);
    # auto | float32 | bfloat16 = on a merged copy of it in that dtype, synced before each generation
    cpu_dtype: str = "train"
    trainer: dict = field(default_factory=dict)  # TRL GRPOConfig arguments


@dataclass
class ExportStage:
    quantizations: list[str] = field(default_factory=lambda: ["q8_0", "q4_k_m"])
    push_to_hub: bool = False  # side effect: off unless asked
    hub_repo: str | None = None
    # YaRN past the native context, as Qwen's card writes it: {factor: 4.0, original_max_position_embeddings:
    # 262144}. Only when long inputs are the norm (static YaRN changes short ones too); factor ≈ typical / native.
    yarn: dict | None = None

    def rope_yarn(self) -> dict | None:
        """`rope_parameters` entries for YaRN, checked, or None."""
        if not self.yarn:
            return None
        known = {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "attention_factor"}
        if unknown := set(self.yarn) - known:
            raise RecipeError(f"export.yarn: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        factor, original = self.yarn.get("factor"), self.yarn.get("original_max_position_embeddings")
        if not isinstance(factor, (int, float)) or factor <= 1 or not isinstance(original, int) or original <= 0:
            raise RecipeError("export.yarn needs factor > 1 and original_max_position_embeddings (the native context)")
        return {"rope_type": "yarn", **self.yarn}

    def yarn_update(self, config: dict) -> dict | None:
        """What YaRN changes in a model config (a `config.json` as a dict): the text model's whole
        `rope_parameters` (its mRoPE sections kept) with YaRN's entries, and the longer context; nested
        under `text_config` for a vision-language config. The shape vLLM's `--hf-overrides` takes."""
        yarn = self.rope_yarn()
        if yarn is None:
            return None
        text = config.get("text_config", config)
        update = {"rope_parameters": {**(text.get("rope_parameters") or {}), **yarn},
                  "max_position_embeddings": int(yarn["factor"] * yarn["original_max_position_embeddings"])}
        return {"text_config": update} if "text_config" in config else update


@dataclass
class SamplingPreset:
    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float = 0.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0


SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(SamplingPreset))  # what a preset sets

# The presets' names as Qwen3.6's card and the kit's server use them → the recipe's fields.
PRESETS = {"thinking": "thinking", "thinking-precise": "thinking_precise", "instruct": "non_thinking"}


@dataclass
class SamplingConfig:
    """Qwen3.6's presets: thinking (general), thinking-precise (coding, exact answers), non-thinking."""

    thinking: SamplingPreset = field(default_factory=lambda: SamplingPreset(1.0, 0.95, 20))
    thinking_precise: SamplingPreset = field(default_factory=lambda: SamplingPreset(0.6, 0.95, 20))
    non_thinking: SamplingPreset = field(default_factory=lambda: SamplingPreset(0.7, 0.8, 20, 1.5))

    def named(self, name: str) -> SamplingPreset:
        """A preset by its card name: `thinking`, `thinking-precise` or `instruct` (thinking off)."""
        if name not in PRESETS:
            raise RecipeError(f"unknown sampling preset '{name}': the presets are {', '.join(PRESETS)}")
        return getattr(self, PRESETS[name])


@dataclass
class EvalStage:
    max_items: int = 40  # items per task
    max_new_tokens: int = 256  # thinking output needs room; real recipes use thousands
    batch_size: int = 8  # prompts per model.generate call on the hf engine (vLLM batches them all)
    # the weights' dtype for generation on a CPU (hf engine; adapters merged into them): auto = bf16 where the CPU
    # multiplies bf16 in hardware (AMX, AVX-512 BF16), else fp32 | float32 | bfloat16. A GPU keeps the model's dtype.
    cpu_dtype: str = "float32"
    seed: int = 0
    generation: str = "auto"  # auto | vllm | hf: auto = vLLM where installed and usable
    decoding: str = "sampled"  # sampled (the thinking preset, as Qwen advises) | greedy
    samples: int = 1  # completions per item when sampled; accuracy is their mean, per item then overall
    gpu_memory_utilization: float = 0.85  # share of the GPU vLLM may take (weights + KV cache)
    harness_num_fewshot: int | None = None  # `kit harness`: None = the task's own (MMLU-Pro: 5-shot)
    loglikelihood: bool = True  # harness multiple-choice tasks: lm-eval's log-likelihood protocol beside the kit's
    # accuracy against the thinking budget: think up to each budget, then `</think>` is appended and the answer
    # follows (budget forcing); [] = off. On the last trained system, `budget_items` items per task.
    budgets: list[int] = field(default_factory=list)
    budget_items: int = 8
    budget_answer_tokens: int = 64  # tokens for the answer after the thinking is closed
    # the judge's agreement with physicians' labels of rubric criteria (HealthBench's meta-evaluation schema: prompt,
    # completion, rubric, binary_labels): a source (bundled:healthbench_meta offline, its address online), or None
    judge_agreement: str | None = None
    judge_agreement_max_rows: int = 200  # rows graded (a seeded sample), one request each with a remote judge


@dataclass
class Recipe:
    name: str
    description: str = ""
    expected_time: str = ""  # what the whole pipeline takes, as measured, and where (notebook 00 prints it up front)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTStage = field(default_factory=SFTStage)
    rl: RLStage = field(default_factory=RLStage)
    export: ExportStage = field(default_factory=ExportStage)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalStage = field(default_factory=EvalStage)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def identity(self) -> dict:
        """The resolved recipe less where things run (PLACEMENT): the same run through another
        server address is the same run."""
        d = self.to_dict()
        for section, key in PLACEMENT:
            d[section].pop(key, None)
        return d

    def hash(self) -> str:
        """Stable hash of the whole resolved recipe."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def stage_hash(self, stage: str) -> str:
        """Hash of what a stage's outputs depend on (its sections and every earlier stage's), so that
        changing RL settings does not make the SFT stage out of date."""
        upto = STAGE_SECTIONS[: [s for s, _ in STAGE_SECTIONS].index(stage) + 1]
        d = self.identity()
        sections = {k: d[k] for _, keys in upto for k in keys}
        return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings that say where a stage runs, not what it makes: left out of the hashes, so that a launch that
# started the rollout server on some port leaves RL up to date for the pipeline that follows it.
PLACEMENT = [("rl", "vllm_server_url"), ("rl", "vllm_server_gpus")]

# Stages in order, each with the recipe sections it adds to what the earlier ones read.
STAGES = ("data", "sft", "rl", "export", "eval")  # the one list of the pipeline's stages, in order
# each stage's recipe sections (a stage's hash covers its own and every earlier stage's)
STAGE_SECTIONS = list(zip(STAGES, (["model", "data"], ["lora", "sft"], ["rl"], ["export", "sampling"], ["eval"])))


def _build(cls, data, where: str):
    """Turn plain data into dataclass `cls`, rejecting unknown keys with their dotted name."""
    origin = typing.get_origin(cls)
    if origin is list:
        (inner,) = typing.get_args(cls)
        if not isinstance(data, list):
            raise RecipeError(f"{where}: expected a list, got {type(data).__name__}")
        return [_build(inner, item, f"{where}[{i}]") for i, item in enumerate(data)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        if data is None:
            return None
        return _build(args[0], data, where)
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            key = f"{where}.{unknown[0]}" if where else unknown[0]
            raise RecipeError(f"unknown recipe key '{key}' (allowed here: {', '.join(sorted(names))})")
        kwargs = {k: _build(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise RecipeError(f"{where or 'recipe'}: {e}") from None
    if cls is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if cls in (int, float, str, bool) and not isinstance(data, cls):
        raise RecipeError(f"{where}: expected {cls.__name__}, got {data!r}")
    return data


def _set_dotted(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise RecipeError(f"--set {dotted}: '{k}' is not a section")
    d[keys[-1]] = value


def _parse_value(text: str):
    """YAML value, with numbers like `3e-3` (a string to YAML 1.1) read as floats, and yes/no/on/off
    kept as words (TRL takes `eval_strategy=no`); booleans are written true/false."""
    if text.strip().lower() in {"yes", "no", "on", "off", "y", "n"}:
        return text.strip()
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_raw(path: Path, seen: tuple) -> dict:
    """A recipe file's data; `inherit: NAME` takes another shipped recipe and changes only what this one says."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    parent = raw.pop("inherit", None)
    if parent is None:
        return raw
    parent_path = RECIPES_DIR / f"{parent}.yaml"
    if not parent_path.exists() or parent in seen:
        raise RecipeError(f"{path.name}: inherit '{parent}' is not a shipped recipe (or inherits itself)")
    base = _read_raw(parent_path, seen + (parent,))
    base.pop("name", None)
    base.pop("description", None)
    base.pop("expected_time", None)  # the parent's measurement is not the child's
    return _merge(base, raw)


def available() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load a shipped recipe by name (or a YAML path) and apply `key.sub=value` overrides."""
    path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        path = Path(name_or_path)
    if not path.exists():
        raise RecipeError(f"no recipe '{name_or_path}' (shipped: {', '.join(available())})")
    raw = _read_raw(path, seen=())
    raw.setdefault("name", path.stem)
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        _set_dotted(raw, key.strip(), _parse_value(value))
    return _build(Recipe, raw, "")


def save_resolved(recipe: Recipe, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "recipe.yaml"
    path.write_text(f"# recipe hash: {recipe.hash()}\n" + recipe.to_yaml(), encoding="utf-8")
    return path


# Trainer arguments renamed in newer transformers (5.2x). Recipes use the new names; the GPU set,
# which pins transformers 5.17 for unsloth, only knows the old ones.
RENAMED_TRAINER_ARGS = {"activation_checkpointing": "gradient_checkpointing",
                        "activation_checkpointing_kwargs": "gradient_checkpointing_kwargs"}


def trainer_setting(recipe: "Recipe", stage: str, key: str):
    """A trainer setting as the stage's TRL config will have it: the recipe's `<stage>.trainer.<key>`, else the
    default of the installed TRL's own config class (GRPOConfig for rl, SFTConfig for sft), read from it rather
    than copied here, so that it follows TRL (its max_completion_length default is 512, not the 256 once copied).

    >>> trainer_setting(load_recipe("tiny"), "rl", "max_completion_length")
    192
    """
    section = {"rl": recipe.rl.trainer, "sft": recipe.sft.trainer}[stage]
    if key in section:
        return section[key]
    import trl

    fields = {f.name: f for f in dataclasses.fields(trl.GRPOConfig if stage == "rl" else trl.SFTConfig)}
    if key not in fields:
        raise RecipeError(f"'{stage}.trainer.{key}' is not a setting of TRL's {stage} config")
    field = fields[key]
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def check_trainer_keys(trainer: dict, config_cls, where: str) -> dict:
    """The recipe's trainer section as arguments of the installed TRL config class.

    A key the class does not have is rejected, naming it; a key renamed in newer transformers is
    passed under its old name when only that one exists.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    args = {}
    for key in sorted(trainer):
        name = key if key in names else RENAMED_TRAINER_ARGS.get(key)
        if name not in names:
            raise RecipeError(f"unknown recipe key '{where}.{key}': not an argument of {config_cls.__name__}")
        args[name] = trainer[key]
    return args
