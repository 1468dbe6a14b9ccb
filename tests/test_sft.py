import json
import subprocess
import sys

import pytest
import torch

from conftest import kill_during_save
from kit.recipe import load_recipe
from child import failure


def kit(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "kit", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_tiny_sft_really_learns(sft_metrics):
    m = sft_metrics
    assert m["end"] == "transformers+peft" and m["device"] == "cpu"
    assert m["steps"] == load_recipe("tiny").sft.trainer["max_steps"]
    assert m["train_loss_last"] < 0.85 * m["train_loss_first"]
    assert m["format_adherence_after"] > m["format_adherence_before"]
    assert m["loss_history"]["val"], "validation loss was never computed"
    assert m["peak_rss_mb"] > 0 and m["seconds"] > 0


@pytest.mark.slow
def test_sft_saves_adapter_tokenizer_template_and_card(sft_metrics, shared_runs):
    adapter = shared_runs / "tiny" / "sft" / "adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"):
        assert (adapter / name).exists(), name
    tok_cfg = json.loads((adapter / "tokenizer_config.json").read_text())
    template = tok_cfg.get("chat_template") or (adapter / "chat_template.jinja").read_text()
    assert "enable_thinking" in template
    card = (adapter / "README.md").read_text()
    assert "not medical advice" in card.lower() and "not validated for clinical use" in card
    assert (shared_runs / "tiny" / "sft" / "recipe.yaml").exists()


@pytest.mark.slow
def test_interrupted_sft_resumes_instead_of_restarting(runs_dir):
    sets = ["--set", "sft.trainer.max_steps=40", "--set", "sft.trainer.save_steps=10",
            "--set", "sft.trainer.eval_steps=20", "--set", "sft.format_check_questions=2"]
    assert kit("data", "--recipe", "tiny").returncode == 0
    # a SIGKILL in the middle of the save of checkpoint-20: a half-written checkpoint after the last whole one
    whole = kill_during_save("sft", sets, runs_dir / "tiny" / "sft" / "checkpoints", step=20)
    assert whole == "checkpoint-10" and not (runs_dir / "tiny" / "sft" / "metrics.json").exists()
    done = kit("sft", "--recipe", "tiny", *sets)
    assert done.returncode == 0, failure(done)
    assert "resuming from" in done.stdout
    m = json.loads((runs_dir / "tiny" / "sft" / "metrics.json").read_text())
    assert m["resumed_from"] == whole and m["steps"] == 40  # the half-written one was passed over, not loaded
    assert (runs_dir / "tiny" / "sft" / "adapter" / "adapter_model.safetensors").exists()
    # a changed recipe does not resume from the old run's checkpoints
    again = kit("sft", "--recipe", "tiny", *sets, "--set", "lora.r=8", "--set", "sft.trainer.max_steps=10")
    assert again.returncode == 0 and "starting afresh" in again.stdout and "resuming" not in again.stdout


@pytest.mark.slow
def test_four_bit_path_trains_on_cpu(runs_dir):
    from kit import data, sft

    recipe = load_recipe("tiny", ["model.load_in_4bit=true", "sft.trainer.max_steps=3", "sft.trainer.eval_strategy=no",
                                  "sft.trainer.logging_steps=1",
                                  "sft.format_check_questions=1", "sft.format_check_max_new_tokens=8"])
    data.run(recipe)
    session = sft.prepare(recipe)
    assert any(type(m).__name__ == "Linear4bit" for m in session.loaded.model.modules())
    # the tiny recipe trains embeddings and head in full: they stay fp32 although TRL casts trainables to bf16
    full = {n: p.dtype for n, p in session.trainer.model.named_parameters() if ".modules_to_save." in n}
    assert full and set(full.values()) == {torch.float32}, full
    m = sft.train(session)
    assert m["steps"] == 3 and m["train_loss_first"] > 0


def test_capacity_is_checked_before_loading(runs_dir):
    proc = kit("sft", "--recipe", "qwen3.6-27b-grpo", "--set", "data.sft=[{path: 'bundled:medical_o1_sft_en'}]")
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr or "needs about" in proc.stderr


def test_missing_data_stage_names_the_command(runs_dir):
    proc = kit("sft", "--recipe", "tiny")
    assert proc.returncode == 2 and "python -m kit data --recipe tiny" in proc.stderr


def test_lora_init_follows_the_recipe_seed_not_the_process(runs_dir):
    """Same recipe, same adapter at the start, whatever the process did with the RNG before."""
    from kit.modeling import load_model

    def lora_a(recipe, rng_before):
        torch.manual_seed(rng_before)
        model = load_model(recipe).model
        return torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "lora_A" in n])

    tiny = load_recipe("tiny")
    first = lora_a(tiny, 1)
    assert torch.equal(first, lora_a(tiny, 2))
    assert not torch.equal(first, lora_a(load_recipe("tiny", ["data.seed=7"]), 1))


def test_format_check_asks_held_out_rows_then_rl_questions(runs_dir):
    from kit import data, sft
    from kit.data import read_jsonl
    from kit.runs import stage_dir

    recipe = load_recipe("tiny", ["sft.format_check_questions=20"])
    data.run(recipe)
    val = read_jsonl(stage_dir(recipe, "data") / "sft_val.jsonl")
    train = {r["messages"][0]["content"] for r in read_jsonl(stage_dir(recipe, "data") / "sft_train.jsonl")}
    rl = [r["question"] for r in read_jsonl(stage_dir(recipe, "data") / "rl.jsonl")]
    qs, images = sft.format_check_questions(recipe, val)
    assert qs == ([r["messages"][0]["content"] for r in val] + rl)[:20]
    assert images == [[]] * len(qs) and sft.stored_images(recipe, images) is None  # text questions: no image
    assert not train & set(qs)
    assert sft.format_check_questions(load_recipe("tiny", ["sft.format_check_questions=3"]), val)[0] == qs[:3]
    no_rl = load_recipe("tiny", ["sft.format_check_questions=20", "data.rl=[]"])
    assert sft.format_check_questions(no_rl, val)[0] == qs[: len(val)]


def test_every_training_log_line_carries_the_peak_gpu_memory_on_a_gpu(monkeypatch):
    """A GPU run stopped mid-stage (as one was, at its time limit) still says what it used: the figure
    rides on each log line, ahead of the callbacks that print it."""
    import torch
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler

    from kit import runtime

    printed = []

    class Printer(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            printed.append(dict(logs))

    handler = CallbackHandler([Printer()], None, None, None, None)
    handler.callbacks.insert(0, runtime.peak_memory_logger())  # as runs.train_resumable does
    args, state = TrainingArguments(output_dir="unused", report_to=[]), TrainerState()
    handler.on_log(args, state, TrainerControl(), {"loss": 1.0})
    assert printed == [{"loss": 1.0}]  # no GPU: nothing added
    monkeypatch.setattr(runtime, "has_cuda", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**30)
    handler.on_log(args, state, TrainerControl(), {"loss": 0.5})
    assert printed[-1] == {"loss": 0.5, "peak_gpu_mib": 3072}


def test_resuming_skips_a_checkpoint_a_kill_left_half_written(tmp_path):
    """The Trainer writes trainer_state.json last: a checkpoint without it, or with it cut short, was killed
    during its save, and the run resumes from the newest whole one."""
    import json

    from kit.training import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step, state in ((2, json.dumps({"global_step": 2})), (4, json.dumps({"global_step": 4})), (6, None),
                        (8, '{"global_step": 8, "log_hist')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 16)
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
