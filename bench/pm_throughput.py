"""PM training throughput and peak memory: syco against TRL's RewardTrainer, side by side.

Both train the same model (SmolLM2-135M-Instruct by default), the same LoRA (r16, alpha 32, q/v,
dropout 0.05), on the same token ids (hh-rlhf helpful-base pairs whose prompt + response fits in
--max-length, TRL's own filter), in the same batch order and size, same precision, no gradient
checkpointing. Each run is its own process (clean peak RSS); runs alternate syco, TRL, syco, ...
and the medians are compared. Tokens are counted as TRL counts them: the non-pad tokens of
prompt + chosen and prompt + rejected, so tokens/s and pairs/s ratios are the same number.

    python bench/pm_throughput.py                 # CPU, fp32, 3 rounds
    python bench/pm_throughput.py --device cuda --model 1b --precision bf16 --rounds 2 --steps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from worker import peak_rss_gb, report, run_worker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
ONE_B = {  # a ~1.07B-parameter llama with the SmolLM2 tokenizer, random init
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 4096, "tie_word_embeddings": True,
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def model_cfg(args: argparse.Namespace) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        smol = OmegaConf.to_container(compose(config_name="model/smollm2").model, resolve=True)
    smol["lora"] = LORA
    if args.model == "smollm2":
        return smol
    dtype = "bfloat16" if args.precision == "bf16" else "float32"
    return {"name": "llama-1b-random", "source": "tiny", "seed": 0, "dtype": dtype, "tokenizer": smol,
            "config": ONE_B, "lora": LORA, "attn_implementation": "sdpa"}


def load_data(args: argparse.Namespace, tokenizer) -> list:
    """Encoded hh-rlhf pairs (fixed order) that fit max_length without truncation."""
    import random

    from syco.data.chat import ChatFormatter
    from syco.data.hh_rlhf import load_hh_rlhf
    from syco.data.pairs import BadRows
    from syco.data.preference import EncodedPair

    pairs = load_hh_rlhf(args.data, BadRows("skip"))
    fmt = ChatFormatter(tokenizer)
    out = []
    for p in pairs:
        prompt = fmt.prompt_ids(list(p.prompt))
        c, r = fmt.responses_ids([p.chosen, p.rejected])
        if len(prompt) + max(len(c), len(r)) <= args.max_length:
            out.append(EncodedPair(prompt, c, r, 0.0, 0))
    random.Random(0).shuffle(out)
    need = args.batch_size * (args.steps + args.warmup)
    if len(out) < need:
        raise SystemExit(f"only {len(out)} pairs fit max_length={args.max_length}; need {need}")
    return out[:need]


def run_syco(args: argparse.Namespace) -> dict:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from syco.data.preference import collate_pairs
    from syco.pm.model import PreferenceModel
    from syco.pm.module import PreferenceModelModule

    L.seed_everything(0)
    pm = PreferenceModel.create(model_cfg(args), args.max_length)
    data = load_data(args, pm.tokenizer)
    pad = pm.tokenizer.pad_token_id
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, collate_fn=lambda b: collate_pairs(b, pad))
    marks: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    module = PreferenceModelModule(pm, {"lr": 1e-5, "scheduler": "constant"})
    trainer = L.Trainer(accelerator=args.device if args.device != "cuda" else "gpu", devices=1,
                        precision="bf16-mixed" if args.precision == "bf16" else "32-true", max_steps=len(loader),
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Clock()], limit_val_batches=0)
    if os.environ.get("SYCO_BENCH_PROFILE"):  # where a step's time goes (CPU and GPU operators)
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            trainer.fit(module, train_dataloaders=loader)
        sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25), file=sys.stderr)
        print(prof.key_averages().table(sort_by=sort, row_limit=15), file=sys.stderr)
    else:
        trainer.fit(module, train_dataloaders=loader)
    return summarize(args, data, marks, packed_tokens=sum(e.packed_length for e in data))


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForSequenceClassification, LlamaConfig, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from syco.models.backbone import load_tokenizer, resolve_model_path

    cfg = model_cfg(args)
    torch.manual_seed(0)
    if cfg["source"] == "tiny":
        tokenizer = load_tokenizer(cfg)
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=1, **ONE_B)
        model = AutoModelForSequenceClassification.from_config(config, dtype=getattr(torch, cfg["dtype"]))
    else:
        path = resolve_model_path(cfg)
        tokenizer = load_tokenizer(cfg)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    data = load_data(args, tokenizer)
    ds = Dataset.from_list([{"chosen_ids": e.prompt_ids + e.chosen_ids, "rejected_ids": e.prompt_ids + e.rejected_ids}
                            for e in data])
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    class InOrder(RewardTrainer):  # same batch order as syco
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

    config = RewardConfig(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "trl-bench"), per_device_train_batch_size=args.batch_size,
        max_steps=args.steps + args.warmup, learning_rate=1e-5, lr_scheduler_type="constant", max_length=args.max_length,
        bf16=args.precision == "bf16", gradient_checkpointing=False, report_to=[], save_strategy="no",
        logging_steps=10**6, dataloader_num_workers=0, use_cpu=args.device == "cpu", seed=0,
        disable_tqdm=True,
    )
    peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="SEQ_CLS")
    trainer = InOrder(model=model, args=config, train_dataset=ds, processing_class=tokenizer, peft_config=peft,
                      callbacks=[Clock()])
    trainer.train()
    return summarize(args, data, marks, packed_tokens=sum(e.unpacked_tokens for e in data))


def summarize(args: argparse.Namespace, data: list, marks: list[float], packed_tokens: int) -> dict:
    import torch

    b = args.batch_size
    timed = data[args.warmup * b:]
    seconds = marks[-1] - marks[args.warmup - 1]
    tokens = sum(e.unpacked_tokens for e in timed)
    processed = packed_tokens * len(timed) / len(data)
    out = {"steps": len(marks) - args.warmup, "seconds": seconds, "pairs_per_s": len(timed) / seconds,
           "tokens_per_s": tokens / seconds, "processed_tokens_per_s": processed / seconds,
           "peak_rss_gb": peak_rss_gb()}
    if torch.cuda.is_available():
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["syco", "trl"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--model", choices=["smollm2", "1b"], default="smollm2")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/hh_rlhf/helpful-base/test.jsonl.gz"))
    args = ap.parse_args()
    if args.worker:
        result = (run_syco if args.worker == "syco" else run_trl)(args)
        report(result)
        return

    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("worker", "rounds")]
    results: dict[str, list[dict]] = {"syco": [], "trl": []}
    for rnd in range(args.rounds):
        for who in ("syco", "trl"):
            r = run_worker(__file__, who, passthrough, {**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            results[who].append(r)
            print(f"round {rnd + 1} {who:4s}: {r['tokens_per_s']:7.1f} tokens/s  {r['pairs_per_s']:.3f} pairs/s  "
                  f"peak RSS {r['peak_rss_gb']:.2f} GB" + (f"  GPU {r['peak_gpu_gb']:.1f} GB" if "peak_gpu_gb" in r else ""),
                  flush=True)

    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in results.items()}
    print(f"\nmodel={args.model} device={args.device} precision={args.precision} batch={args.batch_size} pairs "
          f"max_length={args.max_length} timed steps/run={args.steps} rounds={args.rounds}")
    print(f"{'':6s}{'tokens/s':>12s}{'pairs/s':>10s}{'peak RSS GB':>13s}")
    for w in ("syco", "trl"):
        print(f"{w:6s}{med[w]['tokens_per_s']:12.1f}{med[w]['pairs_per_s']:10.3f}{med[w]['peak_rss_gb']:13.2f}")
    print(f"ratio syco/TRL: tokens/s {med['syco']['tokens_per_s'] / med['trl']['tokens_per_s']:.2f}x   "
          f"peak RSS {med['syco']['peak_rss_gb'] / med['trl']['peak_rss_gb']:.2f}x")
    if args.device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        cfg = ONE_B if args.model == "1b" else None
        if peak and cfg:
            n = 1.07e9
            layers, hidden, seq = cfg["num_hidden_layers"], cfg["hidden_size"], args.max_length
            # nanoGPT convention: 6N + 12 L H Q T per token, on the tokens syco actually computes
            flops_per_token = 6 * n + 12 * layers * hidden * seq
            mfu = med["syco"]["processed_tokens_per_s"] * flops_per_token / (peak * 1e12)
            print(f"{name}: syco MFU {100 * mfu:.1f}% of {peak:.0f} TFLOP/s (6N+12LHQT on computed tokens)")


if __name__ == "__main__":
    main()
