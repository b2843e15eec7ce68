"""PPO throughput and peak memory: `train.py task=ppo` steps against TRL's GRPOTrainer and RLOOTrainer.

syco runs twice: with its default critic (`ppo.critic=separate`: a value adapter of its own) and with
`ppo.critic=shared` (a value head on the policy's last hidden state, one forward fewer per rollout and
per update); rows sampled from one prompt run it once in every forward (`ppo.share_prompts`, on by
default) in both.

All sides run the same policy (SmolLM2-135M-Instruct, syco's de-quantized safetensors cache folder,
handed to TRL as the model path), the same LoRA (conf/model/smollm2.yaml's r/alpha/targets, dropout 0
as syco's PPO forces), fp32, the same prompts in the same order (syco's PPO prompt source and its
`step_prompts` order; TRL reads them unshuffled), the same samples per prompt, max new tokens and
temperature (pure sampling: no top-k / top-p), one optimization pass per rollout batch in one
mini-batch (syco: ppo_epochs=1, mini_batch_size = batch; TRL: num_iterations=1, one generation per
optimizer step), the same learning rate and KL coefficient (TRL's beta = syco's ppo.kl.coef, so every
side computes reference log-probs), and the same reward: one exported syco PM (an untrained one on the
SmolLM2 base unless --pm names one), which syco attaches as an adapter on the policy's base and TRL
calls as a reward function (`syco.pm.model.load(path).score`, normalized as syco normalizes).

A step is one rollout batch (sample, score, reference/old log-probs) and its update; samples/s counts
the batch's responses over the steps after --warmup. Each run is its own process, so its peak RSS
(ru_maxrss of that process, = VmHWM) is its own; runs alternate syco, GRPO, RLOO, syco, ... and the
medians are compared. Responses end at EOS or max new tokens, so the mean response length of each side
is printed beside its samples/s (sampling seeds cannot be matched across the libraries).

    python bench/ppo_throughput.py                                   # CPU, 3 rounds
    python bench/ppo_throughput.py --steps 3 --batch 8 --max-new-tokens 16 --rounds 1 --trl grpo
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from worker import peak_rss_gb, report, run_worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRL_SIDES = ("grpo", "rloo")
SYCO_SIDES = {"syco": "separate", "syco-shared": "shared"}  # side -> ppo.critic
DIFFERENCES = """\
What still differs (cost and algorithm), with the settings above equal:
- syco PPO is actor-critic: a second LoRA adapter + value head on the same base gives per-token values
  (one more forward over each rollout, and the value loss in the update; syco-shared reads them off the
  policy's forward with a head on its last hidden state), advantages by GAE (gamma,
  lambda) over token rewards, whitened over the batch; the KL to the reference (k1, ppo.kl.coef) is a
  per-token penalty inside the reward; clipped value loss (vf_coef). The PM is an adapter on the
  policy's base (one base model in memory); the reference is the base with adapters disabled.
- TRL GRPO has no value model: advantages are the group-relative PM scores (minus the mean of the
  prompt's samples, divided by their std: scale_rewards=group), one per response, spread over its
  tokens; the KL (k3 estimator, beta) is a term of the loss, not of the reward; the loss is
  token-averaged over the batch (loss_type=dapo). With num_iterations=1 it skips the no-grad
  forward for old log-probs (the ratio is 1 by construction): its rollout forwards only the reference.
- TRL RLOO also has no value model: the advantage is the score minus the mean of the prompt's other
  samples (leave-one-out); the KL (k1, beta) is summed over the response and subtracted from the
  reward per sequence (syco: per token, then GAE). Its rollout forwards the policy (old log-probs) and
  the reference, without grad, as syco does (syco also forwards the value adapter).
- Both TRL trainers load the PM as a model of its own beside the policy (a second base model in memory)
  and re-tokenize text for it; the reference is the policy with its LoRA adapter disabled, as in syco.
- Sampling seeds differ, so the responses (and their lengths, printed) differ between sides."""


def compose(args: argparse.Namespace, run_dir: Path, critic: str = "separate"):
    """The task=ppo config of this benchmark's settings (the TRL sides read theirs from it too)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    steps = args.warmup + args.steps
    overrides = [
        "model=smollm2", "task=ppo", f"run_dir={run_dir}", f"shared_data={REPO.parent / 'shared' / 'data'}",
        "logger=none", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
        f"ppo.pm={args.pm}", f"ppo.batch_size={args.batch}", f"ppo.mini_batch_size={args.batch}",
        f"ppo.samples_per_prompt={args.samples_per_prompt}", "ppo.ppo_epochs=1",
        f"ppo.max_new_tokens={args.max_new_tokens}", f"ppo.temperature={args.temperature}",
        # one step more than timed: evaluation runs at the last step, after the timed ones (see run_syco)
        f"ppo.total_steps={steps + 1}", "ppo.eval.at_start=false", f"ppo.eval.every={10**6}",
        "ppo.eval_prompts.limit=2", f"ppo.checkpoint_every={10**6}", f"ppo.critic={critic}",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose(config_name="train", overrides=overrides)


def run_export(args: argparse.Namespace) -> dict:
    """An untrained PM on the SmolLM2 base, exported once: throughput does not depend on what it learned."""
    from omegaconf import OmegaConf

    from syco.pm.model import PreferenceModel

    cfg = compose(args, Path(args.pm).parent / "run")
    PreferenceModel.create(OmegaConf.to_container(cfg.model, resolve=True), int(cfg.data.max_length)).save(args.pm)
    return {"pm": args.pm}


def summarize(args: argparse.Namespace, marks: list[float], lengths: list[float]) -> dict:
    """marks: the start, then the end of each step; lengths: each step's mean response tokens."""
    timed = len(marks) - 1 - args.warmup
    seconds = marks[-1] - marks[args.warmup]
    return {"steps": timed, "seconds": seconds, "samples_per_s": timed * args.batch / seconds,
            "response_tokens": statistics.mean(lengths[args.warmup:]) if lengths[args.warmup:] else float("nan"),
            "peak_rss_gb": peak_rss_gb()}


def run_syco(args: argparse.Namespace, run_dir: Path, critic: str) -> dict:
    import lightning as L

    from syco.ppo.training import build, fit, trainer_for

    cfg = compose(args, run_dir, critic)
    L.seed_everything(int(cfg.seed))
    module, ppo = build(cfg)
    steps = args.warmup + args.steps
    marks: list[float] = []
    lengths: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *a: Any, **k: Any) -> None:
            marks.append(time.perf_counter())
            lengths.append(float(pl_module.last_metrics.get("response/length", float("nan"))))
            if len(marks) == steps + 1:  # stop before the last configured step and its evaluation
                trainer.should_stop = True

    class Start(L.Callback):
        def on_train_start(self, *a: Any, **k: Any) -> None:
            marks.append(time.perf_counter())

    trainer = trainer_for(cfg, ppo, [], run_dir)
    trainer.callbacks += [Start(), Clock()]
    fit(trainer, module)
    if module.ppo_step != steps:
        raise RuntimeError(f"syco ran {module.ppo_step} PPO steps, expected {steps}")
    # whether the PM rides on the policy's base (ppo.pm_on_policy_base=auto) or is a model of its own
    return {**summarize(args, marks, lengths), "pm_adapter": type(module.pm).__name__ == "SharedBasePM"}


def run_trl(args: argparse.Namespace, run_dir: Path, side: str) -> dict:
    import torch
    from datasets import Dataset
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from peft import LoraConfig
    from transformers import TrainerCallback

    from syco.models.backbone import load_tokenizer, resolve_model_path
    from syco.pm.model import load
    from syco.ppo.prompts import step_prompts

    cfg = compose(args, run_dir)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    k, steps, seed = args.samples_per_prompt, args.warmup + args.steps, int(cfg.seed)
    torch.manual_seed(seed)
    prompts = instantiate(cfg.ppo.prompts)
    # syco's prompts of steps 0..n-1 in its order; TRL reads them unshuffled, k samples each
    ordered = [p for s in range(steps) for p in step_prompts(prompts, s, args.batch // k, seed)]
    dataset = Dataset.from_list([{"prompt": [dict(m) for m in p]} for p in ordered])
    pm = load(args.pm, cache_dir=cfg.cache_dir)
    pm.eval()
    normalize = cfg.ppo.reward.normalize == "pm"

    def pm_reward(prompts: list, completions: list, **_: Any) -> list[float]:
        responses = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        with torch.no_grad():
            return pm.score(prompts, responses, batch_size=int(cfg.ppo.reward.batch_size),
                            padding_side=str(cfg.ppo.reward.padding_side), normalize=normalize)

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a: Any, **kw: Any) -> None:
            marks.append(time.perf_counter())

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            marks.append(time.perf_counter())

    lora = model_cfg["lora"]
    common = dict(
        output_dir=str(run_dir / "trl"), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_generations=k, steps_per_generation=1, num_iterations=1,
        max_completion_length=args.max_new_tokens, temperature=args.temperature, top_k=0, top_p=1.0,
        beta=float(cfg.ppo.kl.coef), learning_rate=float(cfg.ppo.optimizer.lr), weight_decay=0.0,
        max_grad_norm=float(cfg.ppo.max_grad_norm), max_steps=steps, shuffle_dataset=False, disable_dropout=True,
        use_vllm=False, use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=seed, dataloader_num_workers=0,
        model_init_kwargs={"dtype": "float32", "attn_implementation": model_cfg["attn_implementation"]},
    )
    if model_cfg.get("gradient_checkpointing"):
        common["gradient_checkpointing"] = True
    if side == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    peft = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=0.0, target_modules=list(lora["target_modules"]),
                      task_type="CAUSAL_LM")
    trainer = Trainer(model=resolve_model_path(model_cfg, Path(cfg.cache_dir)), reward_funcs=pm_reward,
                      args=Config(**common), train_dataset=dataset, processing_class=load_tokenizer(model_cfg),
                      peft_config=peft, callbacks=[Clock()])
    trainer.train()
    lengths = [float(r["completions/mean_length"]) for r in trainer.state.log_history if "completions/mean_length" in r]
    if len(marks) != steps + 1:
        raise RuntimeError(f"TRL {side} ran {len(marks) - 1} steps, expected {steps}")
    return summarize(args, marks, lengths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["export", *SYCO_SIDES, *TRL_SIDES])
    ap.add_argument("--trl", nargs="+", choices=TRL_SIDES, default=list(TRL_SIDES), help="TRL trainers to compare")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed PPO steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (rollout + update)")
    ap.add_argument("--batch", type=int, default=8, help="responses per step (rollout batch = update batch)")
    ap.add_argument("--samples-per-prompt", type=int, default=4, help="GRPO/RLOO group size (>= 2)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--pm", default=None, help="an exported PM folder (default: an untrained one, made once)")
    args = ap.parse_args()
    if args.batch % args.samples_per_prompt or args.samples_per_prompt < 2:
        ap.error("--batch must be a multiple of --samples-per-prompt, which must be >= 2 (GRPO/RLOO groups)")
    if args.worker:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            result = (run_export(args) if args.worker == "export" else
                      run_syco(args, run_dir, SYCO_SIDES[args.worker]) if args.worker in SYCO_SIDES else
                      run_trl(args, run_dir, args.worker))
        report(result)
        return

    # no hub: TRL and transformers read only the local folders given to them
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    sides = [*SYCO_SIDES, *args.trl]
    with tempfile.TemporaryDirectory() as tmp:

        def worker(who: str) -> dict:
            passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                           if k not in ("worker", "rounds", "trl") and v is not None]
            return run_worker(__file__, who, passthrough, env)

        pm_name = args.pm or "untrained, on the SmolLM2 base (made for this run)"
        if args.pm is None:
            args.pm = str(Path(tmp) / "pm")
            worker("export")
        results: dict[str, list[dict]] = {w: [] for w in sides}
        for rnd in range(args.rounds):
            for who in sides:
                r = worker(who)
                results[who].append(r)
                print(f"round {rnd + 1} {who:11s}: {r['samples_per_s']:6.2f} samples/s  {r['response_tokens']:5.1f} "
                      f"tokens/response  peak RSS {r['peak_rss_gb']:.2f} GB  ({r['steps']} steps, {r['seconds']:.1f} s)",
                      flush=True)

    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("samples_per_s", "response_tokens", "peak_rss_gb")}
           for w, rs in results.items()}
    print(f"\nSmolLM2-135M-Instruct fp32 CPU (torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}), LoRA "
          f"from conf/model/smollm2.yaml (dropout 0); batch={args.batch} responses/step = "
          f"{args.batch // args.samples_per_prompt} prompts x {args.samples_per_prompt} samples; max_new_tokens="
          f"{args.max_new_tokens} temperature={args.temperature}; 1 update pass of 1 mini-batch per step; "
          f"warm-up steps={args.warmup}, timed steps/run={args.steps}, rounds={args.rounds}; PM: {pm_name}")
    if not all(r.get("pm_adapter") for side in SYCO_SIDES for r in results[side]):
        print("note: syco loaded the PM as a model of its own (not trained on the policy's base), as TRL does")
    print(f"{'':12s}{'samples/s':>11s}{'tokens/resp':>13s}{'peak RSS GB':>13s}")
    for w in sides:
        print(f"{w:12s}{med[w]['samples_per_s']:11.2f}{med[w]['response_tokens']:13.1f}{med[w]['peak_rss_gb']:13.2f}")
    for mine in SYCO_SIDES:
        for w in args.trl:
            print(f"ratio {mine}/{w.upper()}: samples/s {med[mine]['samples_per_s'] / med[w]['samples_per_s']:.2f}x   "
                  f"peak RSS {med[mine]['peak_rss_gb'] / med[w]['peak_rss_gb']:.2f}x   (goal: >= 1.5x and <= 1.00x)")
    print("\n" + DIFFERENCES)


if __name__ == "__main__":
    main()
