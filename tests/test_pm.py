"""Preference model behaviour on a tiny random llama: scoring API, export, training, resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from syco.core.bradley_terry import bradley_terry_loss
from syco.core.indexing import last_token_index
from syco.data.beliefs import load_items, probe_pairs, rated_pairs
from syco.data.pairs import BadRows
from syco.data.preference import PreferenceDataModule, PreferenceSplits, collate_pairs, encode_pairs
from syco.pm import PreferenceModel, load
from syco.pm.module import PreferenceModelModule

CONF = Path(__file__).resolve().parents[1] / "conf"
PROMPTS = ["What is the capital of France?"] * 3 + [[{"role": "system", "content": "Be brief."},
                                                     {"role": "user", "content": "Name a prime number."}]] * 2 + ["Hi"]
RESPONSES = ["Paris.", "It is Lyon, I believe.", "Paris, the capital and largest city of France.", "7", "Four.",
             "Hello! How can I help you today?"]


def tiny_cfg(**lora) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = OmegaConf.to_container(compose(config_name="model/tiny").model, resolve=True)
    cfg["lora"].update(lora)
    return cfg


def make_pm(max_length: int = 96, seed: int = 0, **lora) -> PreferenceModel:
    pm = PreferenceModel.create(tiny_cfg(**lora), max_length=max_length, seed=seed)
    # LoRA B starts at zero; give every adapter weight a value so that tests see its effect
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return pm


@pytest.fixture(scope="module")
def pm() -> PreferenceModel:
    return make_pm()


def belief_batch(pm: PreferenceModel, n: int = 16) -> list:
    items = load_items("builtin", "builtin")[:n]
    pairs = rated_pairs(items, beta=2.0, gamma=1.0, templates_per_condition=1, seed=0)
    return encode_pairs(pairs, pm.formatter, pm.max_length, BadRows())


def test_shared_prompt_scores_equal_pair_by_pair(pm):
    together = pm.score(PROMPTS, RESPONSES)
    alone = [pm.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert max(abs(a - b) for a, b in zip(together, alone)) < 1e-5
    assert len(set(round(s, 6) for s in together)) == len(together)  # real, distinct scores


def test_scores_do_not_depend_on_padding_side_or_batch_composition(pm):
    ref = pm.score(PROMPTS, RESPONSES)
    for kwargs in [dict(padding_side="left"), dict(batch_size=1), dict(batch_size=2, padding_side="left"),
                   dict(max_row_tokens=1)]:  # max_row_tokens=1: one response per row
        other = pm.score(PROMPTS, RESPONSES, **kwargs)
        assert max(abs(a - b) for a, b in zip(ref, other)) < 1e-4, kwargs
    # the same pair inside a different batch
    mixed = pm.score(PROMPTS[::-1] + ["Unrelated question?"], RESPONSES[::-1] + ["Unrelated answer."])
    assert max(abs(a - b) for a, b in zip(ref, mixed[:-1][::-1])) < 1e-4


def test_packed_rewards_equal_unpacked_forward_with_last_token_index(pm):
    """Packing [prompt, A, B] gives the reward a plain padded forward reads at the last token."""
    prompt = pm.formatter.prompt_ids("What is the capital of France?")
    resp = pm.formatter.responses_ids(["Paris.", "It is Lyon, I believe."])
    packed_scores = pm.score(["What is the capital of France?"] * 2, ["Paris.", "It is Lyon, I believe."])
    for side in ("left", "right"):
        seqs = [prompt + r for r in resp]
        width = max(map(len, seqs))
        ids = torch.full((2, width), pm.tokenizer.pad_token_id)
        mask = torch.zeros((2, width), dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[i, sl] = torch.tensor(s)
            mask[i, sl] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            hidden = pm.base.model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
            idx = last_token_index(mask)
            plain = pm.base.reward_head(hidden[torch.arange(2), idx]).squeeze(-1)
        assert torch.allclose(plain, torch.tensor(packed_scores), atol=1e-5), side
        # the reward is read at the end-of-turn token, not at a pad token that equals it
        assert ids[torch.arange(2), idx].tolist() == [s[-1] for s in seqs]


def test_save_load_gives_identical_scores(pm, tmp_path):
    before = pm.score(PROMPTS, RESPONSES)
    pm.save(tmp_path / "pm", variant="test")
    loaded = load(tmp_path / "pm")
    after = loaded.score(PROMPTS, RESPONSES)
    assert max(abs(a - b) for a, b in zip(before, after)) < 1e-5
    assert loaded.info["variant"] == "test"
    assert (tmp_path / "pm" / "adapter_model.safetensors").is_file()
    # the head travels inside the adapter file
    from safetensors import safe_open

    with safe_open(tmp_path / "pm" / "adapter_model.safetensors", "pt") as f:
        assert any("reward_head" in k for k in f.keys())


def test_prefix_is_saved_and_changes_scores(pm, tmp_path):
    prefix = [{"role": "user", "content": "Be honest with me."}, {"role": "assistant", "content": "I will."}]
    pm.with_prefix(prefix).save(tmp_path / "prompted")
    plain = pm.score(PROMPTS, RESPONSES)
    prompted = load(tmp_path / "prompted").score(PROMPTS, RESPONSES)
    unprefixed = load(tmp_path / "prompted", prefix=None).score(PROMPTS, RESPONSES)
    assert max(abs(a - b) for a, b in zip(plain, unprefixed)) < 1e-5
    assert max(abs(a - b) for a, b in zip(plain, prompted)) > 1e-3
    text = pm.with_prefix(prefix).formatter.prompt_text("Q?")
    assert text.index("Be honest with me.") < text.index("Q?")


def test_bad_scoring_input_is_named(pm, tmp_path):
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        pm.score(["a", "b"], ["x"])
    with pytest.raises(ValueError, match=r"prompts\[1\].*max_length=96"):
        pm.score(["short", "word " * 200], ["x", "y"])
    with pytest.raises(FileNotFoundError, match="not an exported syco PM"):
        load(tmp_path / "nowhere")


def fit(pm: PreferenceModel, data: list, steps: int, root: Path, ckpt_path: str | None = None, **kwargs) -> L.Trainer:
    L.seed_everything(0)
    loader = DataLoader(data, batch_size=4, shuffle=False,
                        collate_fn=lambda b: collate_pairs(b, pm.tokenizer.pad_token_id))
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root, limit_val_batches=0, **kwargs)
    trainer.fit(PreferenceModelModule(pm, {"lr": 1e-2, "scheduler": "constant"}), train_dataloaders=loader,
                ckpt_path=ckpt_path)
    return trainer


def test_one_step_changes_every_trainable_parameter_and_no_frozen_one(tmp_path):
    pm = make_pm()
    before = {n: p.detach().clone() for n, p in pm.named_parameters()}
    fit(pm, belief_batch(pm), 1, tmp_path)
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert any("reward_head" in n for n in trainable) and any("lora_A" in n for n in trainable)
    for name, p in pm.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == (name in trainable), name


def test_training_lowers_the_bradley_terry_loss(tmp_path):
    pm = make_pm()
    data = belief_batch(pm, 8)
    loader = DataLoader(data, batch_size=8, collate_fn=lambda b: collate_pairs(b, pm.tokenizer.pad_token_id))

    def loss_and_accuracy() -> tuple[float, float]:
        with torch.no_grad():
            r = torch.cat([pm(b["packed"]) for b in loader])
        return bradley_terry_loss(r[:, 0], r[:, 1]).item(), (r[:, 0] > r[:, 1]).float().mean().item()

    loss0, _ = loss_and_accuracy()
    fit(pm, data, 30, tmp_path)
    loss1, acc1 = loss_and_accuracy()
    assert loss1 < loss0 - 0.2 and acc1 >= 0.75, (loss0, loss1, acc1)


def fit_datamodule(pm: PreferenceModel, steps: int, root: Path, ckpt_path: str | None = None,
                   **kwargs) -> L.Trainer:
    items = load_items("builtin", "builtin")[:16]
    splits = PreferenceSplits(rated_pairs(items, 2.0, 1.0, 1), [], [], BadRows())
    dm = PreferenceDataModule(splits, pm.formatter, pm.max_length, batch_size=4, group_by_length=True, seed=3)
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root, limit_val_batches=0, **kwargs)
    trainer.fit(PreferenceModelModule(pm, {"lr": 1e-2, "scheduler": "constant"}), datamodule=dm, ckpt_path=ckpt_path)
    return trainer


def test_checkpoint_holds_only_trainable_weights_and_resumes_mid_epoch_exactly(tmp_path):
    """A preempted job restarted from its last checkpoint ends where an uninterrupted one does:
    same weights, optimizer and schedule state, and no batch of the epoch seen twice."""
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0,
                                               every_n_train_steps=3)
    pm_a = make_pm()
    fit_datamodule(pm_a, 3, tmp_path / "a", callbacks=[ckpt])  # 48 pairs / 4 = 12 batches: stops mid-epoch
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    trainable = {f"pm.{n}" for n, p in pm_a.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    pm_resumed = make_pm()
    fit_datamodule(pm_resumed, 7, tmp_path / "b", ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    pm_straight = make_pm()
    fit_datamodule(pm_straight, 7, tmp_path / "c")
    for (n, a), (_, b) in zip(pm_resumed.named_parameters(), pm_straight.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), n
    assert not torch.equal(pm_a.base.reward_head.modules_to_save["default"].weight,
                           pm_straight.base.reward_head.modules_to_save["default"].weight)


def test_nonfinite_loss_stops_training_and_keeps_last_checkpoint(tmp_path):
    pm = make_pm()
    data = belief_batch(pm)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0,
                                               every_n_train_steps=1)
    fit(pm, data, 1, tmp_path, callbacks=[ckpt])
    saved = (tmp_path / "ckpt" / "last.ckpt").read_bytes()
    poisoned = [dataclasses.replace(e, margin=math.nan) for e in data]
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        fit(pm, poisoned, 3, tmp_path, callbacks=[ckpt])
    assert (tmp_path / "ckpt" / "last.ckpt").read_bytes() == saved


def test_validation_metrics_and_syco_rate(tmp_path):
    pm = make_pm()
    items = load_items("builtin", "builtin")
    val = encode_pairs(rated_pairs(items[:10], 2.0, 1.0, 1), pm.formatter, pm.max_length, BadRows())
    probe = encode_pairs(probe_pairs(items[-5:], templates=2), pm.formatter, pm.max_length, BadRows())
    module = PreferenceModelModule(pm, {})
    loader = DataLoader(val + probe, batch_size=7, collate_fn=lambda b: collate_pairs(b, pm.tokenizer.pad_token_id))
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).validate(module, loader, verbose=False)
    res = module.last_validation
    assert res["heldout/accuracy"]["count"] == len(val)
    assert res["pm/syco_rate"]["count"] == len(probe)
    # the same numbers by hand
    with torch.no_grad():
        r = torch.cat([pm(b["packed"]) for b in DataLoader(
            val + probe, batch_size=3, collate_fn=lambda b: collate_pairs(b, pm.tokenizer.pad_token_id))])
    acc = (r[: len(val), 0] > r[: len(val), 1]).float().mean().item()
    syco = (r[len(val):, 1] > r[len(val):, 0]).float().mean().item()
    assert res["heldout/accuracy"]["value"] == pytest.approx(acc)
    assert res["pm/syco_rate"]["value"] == pytest.approx(syco)
    assert "heldout/accuracy/general" not in res  # no general pairs: undefined, not 0.0


def test_shared_rows_give_the_same_rewards_as_one_pair_per_row(pm):
    data = belief_batch(pm, 6)
    long = data[0]
    data.append(dataclasses.replace(long, prompt_ids=long.prompt_ids * 3))  # room for short pairs to share rows
    pad = pm.tokenizer.pad_token_id
    with torch.no_grad():
        shared = pm(collate_pairs(data, pad, share_rows=True)["packed"])
        alone = pm(collate_pairs(data, pad, share_rows=False)["packed"])
    assert collate_pairs(data, pad)["packed"].input_ids.shape[0] < len(data)  # rows really were shared
    assert torch.allclose(shared, alone, atol=1e-5)


def test_reward_statistics_survive_save_load_save(pm, tmp_path):
    pm.reward_mean, pm.reward_std = 0.25, 2.0
    try:
        pm.save(tmp_path / "a", variant="x")
    finally:
        pm.reward_mean, pm.reward_std = 0.0, 1.0
    loaded = load(tmp_path / "a")
    loaded.reward_mean = -1.5
    loaded.save(tmp_path / "b")
    again = load(tmp_path / "b")
    assert (again.reward_mean, again.reward_std, again.info["variant"]) == (-1.5, 2.0, "x")
    raw = again.score(["Hi"], ["Hello!"])[0]
    assert again.score(["Hi"], ["Hello!"], normalize=True)[0] == pytest.approx((raw + 1.5) / 2.0)
