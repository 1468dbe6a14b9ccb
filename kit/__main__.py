"""Command line: `python -m kit <stage> --recipe NAME [--set dotted.key=value ...]`.

    python -m kit recipe tiny            # print the resolved recipe
    python -m kit data --recipe tiny     # data stage → runs/tiny/data/
    python -m kit sft --recipe tiny      # SFT stage → runs/tiny/sft/

Heavy libraries are imported inside each stage, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import sys

from .pipeline import STAGES


def _help(text: str) -> str:
    """argparse expands `%` in help strings (`95%` crashes `--help`): escape it."""
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recipe", help="print the resolved recipe")
    p.add_argument("name", help="recipe name or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    sub.add_parser("recipes", help="list the shipped recipes")
    p = sub.add_parser("check", help="can this machine run the recipe? GPU memory and disk per stage, judge key; "
                                     "loads nothing")
    p.add_argument("--recipe", required=True)
    p.add_argument("--gpu", default=None, choices=["all", "T4", "L4", "A100-40GB", "H100"],
                   help="plan for these GPUs instead of this machine: the table, and exit 0 when the recipe fits one of "
                        "them (default: this GPU, or the table for all without one)")
    p.add_argument("--processes", type=int, default=1,
                   help="training processes (GPUs) of a multi-process launch: what it will use")
    p.add_argument("--config", default=None, help="the launch's accelerate config (kit/accelerate/*.yaml): "
                                                  "estimates per GPU with its sharding")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("tiny-model", help="build (or find) the built-in tiny model and print its folder")
    p = sub.add_parser("judge-check", help="send the recipe's judge a bundled calibration set (master keys, hedges, "
                                           "reworded correct and close wrong answers): its error rates and cost "
                                           "before a paid run; cached, so a rerun makes no requests")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    for stage, (_, help_text) in STAGES.items():
        p = sub.add_parser(stage, help=_help(help_text), description=help_text)
        p.add_argument("--recipe", required=True, help="recipe name or YAML path")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value, e.g. sft.trainer.max_steps=10")

    p = sub.add_parser("pipeline", help="every stage in order, skipping those up to date; writes summary.md")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="rerun stages even when up to date")

    p = sub.add_parser("launch", help="several GPUs as one job: data once, SFT and RL through `accelerate launch` "
                                      "(and the rollout server where rl.vllm_mode is server), then export and eval")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--processes", type=int, required=True, help="training processes, one per GPU")
    p.add_argument("--config", default=None,
                   help="accelerate config (default kit/accelerate/ddp.yaml; fsdp.yaml, zero3.yaml shard the model)")

    p = sub.add_parser("rollout-server", help="`trl vllm-serve` for RL's rollouts (rl.vllm_mode: server) on this "
                                              "machine's GPUs, tensor-parallel, until Ctrl-C")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 for trainers on other machines")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("serve", help="OpenAI-compatible endpoint for the exported model (vLLM or llama.cpp)")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--quant", default=None, help="GGUF to serve on the llama.cpp end (default q4_k_m)")
    p.add_argument("--engine", default="auto", choices=["auto", "vllm", "llama.cpp"],
                   help="auto = vLLM where installed and usable, else llama.cpp")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="context in tokens (default: the recipe's sequence length plus its eval budget; tools need more)")
    p.add_argument("--lora", action="store_true",
                   help="vLLM: serve the base with the run's adapters as named models instead of the merged model")
    p.add_argument("--speculative", choices=["mtp"], default=None,
                   help="vLLM: speculative decoding with the model's own multi-token-prediction layers")
    p.add_argument("--chat-template", default=None, metavar="FILE",
                   help="a Jinja chat template to serve instead of the model's own (both ends)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="clients must send it (the openai client's api_key); default $KIT_API_KEY. A --host beyond "
                        "127.0.0.1 without a key is refused")
    p.add_argument("--no-api-key", action="store_true", help="serve beyond 127.0.0.1 with no key, meaning to")

    p = sub.add_parser("harness", help="lm-evaluation-harness's generative tasks (MMLU-Pro, MMLU-ProX) against `kit "
                                       "serve`, beside the kit's eval, with the two extractions compared")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    p.add_argument("--tasks", default=None, help="comma-separated: only these of the recipe's tasks (default: all)")

    p = sub.add_parser("dashboard", help="trackio's dashboard of the recipe's live training curves (runs/trackio/)")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")

    p = sub.add_parser("compare", help="two runs side by side: eval tables with paired tests, settings that differ, "
                                       "both runs' training curves on one figure")
    p.add_argument("a", help="a recipe's runs folder (runs/<recipe>) or a recipe name")
    p.add_argument("b", help="the other")
    p.add_argument("--out", default="compare.png", help="the figure of both runs' curves (default: compare.png)")

    p = sub.add_parser("demo", help="Gradio chat with the reasoning shown apart from the answer")
    p.add_argument("--recipe", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--backend", default="local", choices=["local", "gguf", "openai"])
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for --backend openai")
    p.add_argument("--model", default=None)
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                   help="a login for the demo (default $KIT_DEMO_AUTH; with --share and none, a password is made and shown)")
    p.add_argument("--no-auth", action="store_true", help="with --share: a public link with no login, meaning to")
    p.add_argument("--share", action="store_true", help="public gradio.live link (off by default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable()  # a crash in native code (llama.cpp, CUDA kernels) still says where in Python
    args = build_parser().parse_args(argv)
    from .errors import KitError
    from .recipe import available, load_recipe

    try:
        if args.command == "recipes":
            print("\n".join(available()))
            return 0
        if args.command == "tiny-model":
            from .recipe import TinyModelConfig
            from .base_model import ensure_tiny as ensure

            print(ensure(TinyModelConfig()))
            return 0
        if args.command == "recipe":
            print(load_recipe(args.name, args.set).to_yaml(), end="")
            return 0
        if args.command == "compare":
            from pathlib import Path

            from .compare import compare, curves, table

            result = compare(args.a, args.b)
            print(table(result))
            print(f"[kit] both runs' curves → {curves(result, Path(args.out))}")
            return 0
        from .tracking import point_at_runs

        point_at_runs()  # before a stage imports TRL: the tracker reads its folder then
        recipe = load_recipe(args.recipe, args.set)
        if args.command == "dashboard":
            from .tracking import dashboard

            dashboard(recipe.name, args.host, args.port, open_browser=not args.no_browser)
            return 0
        if args.command == "check":
            from .calibration import check_or_skip
            from .capacity import preflight

            if recipe.data.rl and recipe.rl.judge.preset != "rule":
                check_or_skip(recipe)  # first: the plan's verdict stays the last line
            return preflight(recipe, args.gpu, args.processes, args.config)
        if args.command == "judge-check":
            from .calibration import check

            report = check(recipe)
            return 1 if report["gullible"] else 0
        if args.command == "pipeline":
            from .pipeline import run as run_pipeline

            run_pipeline(recipe, force=args.force)
            return 0
        if args.command == "demo":
            from .demo import launch

            launch(recipe, args.backend, base_url=args.base_url, model=args.model, share=args.share, port=args.port,
                   auth=args.auth, no_auth=args.no_auth)
            return 0
        if args.command == "launch":
            from .launch import run as run_launch

            run_launch(args.recipe, args.set, args.processes, args.config)
            return 0
        if args.command == "rollout-server":
            from .launch import serve_rollouts

            return serve_rollouts(recipe, args.host, args.port)
        if args.command == "harness":
            from .harness import run as run_harness

            run_harness(recipe, args.limit, args.set, args.tasks.split(",") if args.tasks else None)
            return 0
        if args.command == "serve":
            from .serve import serve

            serve(recipe, args.host, args.port, args.quant, args.engine, args.lora, args.max_model_len, args.speculative,
                  args.chat_template, args.api_key, args.no_api_key)
            return 0
        module = importlib.import_module(STAGES[args.command][0])
        module.run(recipe)
        return 0
    except (KitError, FileNotFoundError) as e:  # errors that carry their own clear message
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
