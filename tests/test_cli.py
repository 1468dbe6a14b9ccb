import subprocess
import sys


def kit(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kit", *args], capture_output=True, text=True, timeout=120, env=env)


def test_check_passes_for_tiny_and_stops_gpu_recipes_on_a_cpu():
    ok = kit("check", "--recipe", "tiny")
    assert ok.returncode == 0 and "OK on the transformers+peft end" in ok.stdout
    for name in ("qwen3.5-4b-gspo", "qwen3.6-27b-grpo", "workshop"):
        bad = kit("check", "--recipe", name)
        assert bad.returncode == 2 and "needs a CUDA GPU" in bad.stderr and "'tiny' recipe" in bad.stderr


def test_check_stops_when_the_judge_key_is_missing(monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items() if k != "DEEPSEEK_API_KEY"}
    bad = kit("check", "--recipe", "tiny", "--set", "rl.judge.preset=deepseek", env=env)
    assert bad.returncode == 2 and "DEEPSEEK_API_KEY" in bad.stderr and "rl.judge.preset=rule" in bad.stderr


def test_recipe_and_recipes_commands():
    out = kit("recipe", "qwen3.5-4b-gspo", "--set", "lora.r=8").stdout
    assert "name: qwen3.5-4b-gspo" in out and "r: 8" in out
    assert set(kit("recipes").stdout.split()) >= {"tiny", "workshop", "qwen3.5-4b-gspo", "qwen3.6-27b-grpo"}


def test_sft_is_skipped_for_a_recipe_without_sft_data(runs_dir):
    from kit import sft
    from kit.recipe import load_recipe

    assert sft.run(load_recipe("tiny", ["data.sft=[]"])) == {"skipped": True}


def test_help_works_for_the_cli_and_every_command():
    """`--help` is the first command many users type; argparse crashes on a bare `%` in a help string."""
    from kit.__main__ import build_parser

    top = kit("--help")
    assert top.returncode == 0 and "Traceback" not in top.stderr, top.stderr
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert {"data", "sft", "rl", "export", "eval", "pipeline", "serve", "demo"} <= set(commands)
    for name in commands:
        out = kit(name, "--help")
        assert out.returncode == 0 and out.stdout.startswith("usage: python -m kit " + name), (name, out.stderr)
    assert "95% intervals" in kit("eval", "--help").stdout


def test_check_prints_memory_and_disk_for_every_recipe_on_four_gpus():
    from kit.recipe import available

    for name in available():
        out = kit("check", "--recipe", name, "--gpu", "all")
        header = next(line for line in out.stdout.splitlines() if line.startswith("| stage |"))
        assert header.split("|")[3:7] == [" T4 ", " L4 ", " A100-40GB ", " H100 "], (name, header)
        for stage in ("eval (HF generate)", "export (16-bit merge)"):
            assert f"| {stage} |" in out.stdout, (name, out.stdout)
        assert "Disk:" in out.stdout
        # planning on a machine without a GPU: checked against the named GPUs, not against this machine
        assert out.returncode == 0 and "[kit] plan:" in out.stdout and "H100" in out.stdout.splitlines()[-1], out.stderr
    too_small = kit("check", "--recipe", "qwen3.6-27b-grpo", "--gpu", "T4")
    assert too_small.returncode == 2 and "T4 has 14.74" in too_small.stderr
