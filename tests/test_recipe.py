import dataclasses

import pytest

from kit.recipe import RecipeError, available, check_trainer_keys, load_recipe

SHIPPED = ["tiny", "qwen3.5-4b-gspo", "qwen3.6-27b-grpo", "workshop"]


def test_every_recipe_is_shipped():
    assert set(SHIPPED) <= set(available())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_recipe_loads_and_its_trainer_configs_build(name, tmp_path):
    from trl import GRPOConfig, SFTConfig

    from kit import sft

    recipe = load_recipe(name)
    if recipe.data.sft:
        config = sft.build_config(recipe, tmp_path)  # values TRL rejects fail here, not on a rented GPU
        assert config.max_length == recipe.model.max_seq_length
    assert recipe.name == name
    check_trainer_keys(recipe.sft.trainer, SFTConfig, "sft.trainer")
    check_trainer_keys(recipe.rl.trainer, GRPOConfig, "rl.trainer")
    assert recipe.rl.algorithm in ("gspo", "grpo")
    assert recipe.rl.judge.preset in ("rule", "deepseek", "openai-compatible")


def test_reproduction_recipes_match_their_models():
    gspo = load_recipe("qwen3.5-4b-gspo")
    assert gspo.model.name_or_path == "Qwen/Qwen3.5-4B" and gspo.model.load_in_4bit
    assert gspo.data.sft[0].path == "FreedomIntelligence/medical-o1-reasoning-SFT" and gspo.data.sft[0].config == "zh"
    assert gspo.rl.algorithm == "gspo" and gspo.rl.judge.preset == "deepseek"
    big = load_recipe("qwen3.6-27b-grpo")
    assert big.model.name_or_path == "Qwen/Qwen3.6-27B" and big.rl.algorithm == "grpo"
    # the card's three rows (MedQA, MMLU-Pro and MMLU-ProX biology) and at least one Chinese medical task
    for recipe in (big, gspo):
        tasks = {d.path.removeprefix("harness:") for d in recipe.data.eval}
        assert {"GBaker/MedQA-USMLE-4-options", "mmlu_pro_biology", "mmlu_prox_en_biology"} <= tasks, recipe.name
        assert any(t.startswith(("cmmlu_", "ceval-", "mmlu_prox_zh_")) for t in tasks), recipe.name


def test_unknown_key_fails_with_its_dotted_name(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name_or_path: x\n  lora_rnak: 8\n")
    with pytest.raises(RecipeError, match=r"'model\.lora_rnak'"):
        load_recipe(str(path))


def test_unknown_top_level_key_and_wrong_type(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle: {}\n")
    with pytest.raises(RecipeError, match="'modle'"):
        load_recipe(str(path))
    path.write_text("model:\n  max_seq_length: long\n")
    with pytest.raises(RecipeError, match="model.max_seq_length: expected int"):
        load_recipe(str(path))


def test_unknown_trainer_key_names_the_trl_class():
    from trl import SFTConfig

    with pytest.raises(RecipeError, match=r"'sft\.trainer\.max_stpes'.*SFTConfig"):
        check_trainer_keys({"max_stpes": 3}, SFTConfig, "sft.trainer")


def test_renamed_trainer_key_goes_under_the_name_the_installed_class_knows():
    """transformers 5.17 (the GPU set, pinned by unsloth) has gradient_checkpointing only; 5.2x renamed it."""
    import dataclasses

    @dataclasses.dataclass
    class OldConfig:
        gradient_checkpointing: bool = True
        max_steps: int = -1

    @dataclasses.dataclass
    class NewConfig(OldConfig):
        activation_checkpointing: bool = True

    section = {"activation_checkpointing": False, "max_steps": 3}
    assert check_trainer_keys(section, OldConfig, "sft.trainer") == {"gradient_checkpointing": False, "max_steps": 3}
    assert check_trainer_keys(section, NewConfig, "sft.trainer") == section

    @dataclasses.dataclass
    class NeitherConfig:
        max_steps: int = -1

    with pytest.raises(RecipeError, match=r"'sft\.trainer\.activation_checkpointing'.*NeitherConfig"):
        check_trainer_keys(section, NeitherConfig, "sft.trainer")


def test_overrides_parse_numbers_lists_and_nested_keys():
    r = load_recipe("tiny", ["sft.trainer.learning_rate=3e-3", "lora.r=4", "lora.modules_to_save=[lm_head]",
                             "rl.judge.preset=deepseek"])
    assert r.sft.trainer["learning_rate"] == pytest.approx(3e-3)
    assert r.lora.r == 4 and r.lora.modules_to_save == ["lm_head"] and r.rl.judge.preset == "deepseek"
    with pytest.raises(RecipeError, match="unknown recipe key 'lora.rank'"):
        load_recipe("tiny", ["lora.rank=4"])


def test_hash_changes_with_content_and_yaml_round_trips(tmp_path):
    a, b = load_recipe("tiny"), load_recipe("tiny", ["lora.r=8"])
    assert a.hash() != b.hash() and a.hash() == load_recipe("tiny").hash()
    path = tmp_path / "again.yaml"
    path.write_text(a.to_yaml())
    assert dataclasses.asdict(load_recipe(str(path))) == dataclasses.asdict(a)


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(RecipeError, match="tiny"):
        load_recipe("nope")
