"""Best-of-n pool throughput: syco's pool against the usual way, side by side in one process.

For each prompt, K samples are drawn and scored by a PM (same SmolLM2 base as the policy):
- syco: `Policy.generate(n=K, max_rows_per_call=R)`: each prompt is prefilled once and its K samples
  decode against that one copy of its keys/values; the pools of several prompts share a generate
  call of up to R rows (each prompt keeps its own seed: the same draws as a call of its own); the PM
  scores the K responses behind one copy of the prompt (`PreferenceModel.score`, one pool per
  forward by default: --pool-score-batch-size);
- usual: one `generate(num_return_sequences=K)` per prompt (the prompt is expanded to K rows
  before the prefill), then each full sequence (prompt + response) scored on its own row;
- per sample: one `generate` call per sample, each full sequence scored on its own row.
Methods alternate round by round (the machine is noisy); ratios of samples per second are
printed, and the samples and scores of syco and the usual way are checked to be the same
(same seeds: identical draws; scores within 1e-4). Goal: syco >= 3x the usual way.

Prompts are hh-rlhf dialogues from ../shared/data, at least --ratio times longer than the
responses; responses are exactly --new-tokens long (min_new_tokens = max_new_tokens).

    OMP_NUM_THREADS=1 python bench/bon_throughput.py   # CPU: SmolLM2, K=16, 8 prompts x 2 rounds
    python bench/bon_throughput.py --device cuda --prompts 32 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_prompts(args: argparse.Namespace, tokenizer) -> list[list[dict]]:
    """hh-rlhf dialogues whose rendered prompt has between ratio * new_tokens and max_prompt_tokens tokens."""
    import random

    from syco.data.chat import ChatFormatter
    from syco.data.hh_rlhf import load_hh_rlhf
    from syco.data.pairs import BadRows

    fmt = ChatFormatter(tokenizer)
    low = args.ratio * args.new_tokens
    pairs = load_hh_rlhf(args.data, BadRows("skip"))
    random.Random(0).shuffle(pairs)
    out = []
    for p in pairs:
        if low <= len(fmt.prompt_ids(list(p.prompt))) <= args.max_prompt_tokens:
            out.append(list(p.prompt))
        if len(out) == args.prompts:
            return out
    raise SystemExit(f"only {len(out)} prompts of {low}..{args.max_prompt_tokens} tokens in {args.data}")


def score_each(pm, prompts: list, responses: list[str], batch_size: int) -> list[float]:
    """The usual scoring: every (prompt, response) is its own padded row, the prompt recomputed."""
    import torch

    from syco.core.packing import pack_rows

    rows = []
    for p, r in zip(prompts, responses):
        prompt_ids = pm.formatter.prompt_ids(p)
        rows.append((prompt_ids, [pm.truncate(prompt_ids, pm.formatter.responses_ids([r])[0])]))
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            packed = pack_rows(rows[start : start + batch_size], pm.tokenizer.pad_token_id, "right").to(pm.device)
            out += [float(x) for x in pm(packed)[:, 0].cpu()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/hh_rlhf/helpful-base/test.jsonl.gz"))
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per round (syco and usual)")
    ap.add_argument("--per-sample-prompts", type=int, default=1, help="prompts per round, one generate per sample")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=4.0, help="prompt tokens >= ratio * response tokens")
    ap.add_argument("--max-prompt-tokens", type=int, default=512)
    ap.add_argument("--score-batch-size", type=int, default=16, help="usual and per sample: rows per PM forward")
    # on CPU one pool per forward is fastest: padding several pools' rows to one length costs more than it saves
    ap.add_argument("--pool-score-batch-size", type=int, default=1, help="syco: prompts' pools per PM forward")
    ap.add_argument("--rows-per-call", type=int, default=128,
                    help="syco: rows (samples) one generate call may hold (eval.generation.max_rows_per_call)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from syco.pm.model import PreferenceModel
    from syco.policy import Policy

    if args.threads:
        torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        model_cfg = OmegaConf.to_container(compose(config_name="model/smollm2").model, resolve=True)
    policy = Policy(model_cfg, device=args.device)
    pm = PreferenceModel.create(model_cfg, max_length=args.max_prompt_tokens + args.new_tokens + 8, seed=0)
    with torch.no_grad():  # an untrained head would score everything alike: give the adapter weights
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    pm = pm.to(args.device).eval()
    prompts = load_prompts(args, policy.tokenizer)
    lengths = [len(policy.tokenizer(policy.prompt_text(p), add_special_tokens=False)["input_ids"]) for p in prompts]
    print(f"model {model_cfg['name']} on {args.device}, K={args.k}, {args.new_tokens} new tokens per sample, "
          f"prompt tokens {min(lengths)}..{max(lengths)} (>= {args.ratio}x the response), "
          f"syco: up to {args.rows_per_call} rows per generate call", flush=True)

    def gen_kwargs(seed: int) -> dict:
        # exactly new_tokens per sample: the same work for every method
        return {"temperature": 1.0, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens,
                "batch_size": args.k, "seed": seed}

    def syco(part: list, seed: int) -> tuple[list[list[str]], list[float]]:
        samples = policy.generate([(p, None) for p in part], n=args.k, max_rows_per_call=args.rows_per_call,
                                  **gen_kwargs(seed))
        flat_p = [p for p, ss in zip(part, samples) for _ in ss]
        flat_r = [r for ss in samples for r in ss]
        return samples, pm.score(flat_p, flat_r, batch_size=args.pool_score_batch_size)

    def usual(part: list, seed: int) -> tuple[list[list[str]], list[float]]:
        samples = policy.generate([(p, None) for p in part], n=args.k, share_prompt=False, **gen_kwargs(seed))
        flat_p = [p for p, ss in zip(part, samples) for _ in ss]
        flat_r = [r for ss in samples for r in ss]
        return samples, score_each(pm, flat_p, flat_r, args.score_batch_size)

    def per_sample(part: list, seed: int) -> tuple[list[list[str]], list[float]]:
        samples = [[policy.generate([(p, None)], n=1, **gen_kwargs(seed + 1000 * i))[0][0] for i in range(args.k)]
                   for p in part]
        flat_p = [p for p, ss in zip(part, samples) for _ in ss]
        flat_r = [r for ss in samples for r in ss]
        return samples, score_each(pm, flat_p, flat_r, args.score_batch_size)

    syco(prompts[:2], 0)  # warm-up (allocator, kernels)
    rates: dict[str, list[float]] = {"syco": [], "usual": [], "per_sample": []}
    max_diff, same_samples = 0.0, True
    for rnd in range(args.rounds):
        for name, fn, part in (("syco", syco, prompts), ("usual", usual, prompts),
                               ("per_sample", per_sample, prompts[: args.per_sample_prompts])):
            t = time.perf_counter()
            samples, scores = fn(part, seed=rnd)
            dt = time.perf_counter() - t
            rates[name].append(len(part) * args.k / dt)
            print(f"round {rnd} {name:10s} {len(part) * args.k:4d} samples in {dt:7.1f} s: "
                  f"{rates[name][-1]:.2f} samples/s", flush=True)
            if name == "syco":
                ref = (samples, scores)
            elif name == "usual":
                same_samples &= samples == ref[0]
                max_diff = max(max_diff, max(abs(a - b) for a, b in zip(scores, ref[1])))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "samples_per_s": med,
        "syco_vs_usual": med["syco"] / med["usual"],
        "usual_vs_per_sample": med["usual"] / med["per_sample"],
        "syco_vs_per_sample": med["syco"] / med["per_sample"],
        "identical_samples": same_samples,
        "max_score_diff": max_diff,
        "settings": {k: getattr(args, k) for k in ("k", "prompts", "new_tokens", "rows_per_call",
                                                    "pool_score_batch_size", "score_batch_size", "device")},
    }
    print(json.dumps(result, indent=2))
    print(f"syco pool {result['syco_vs_usual']:.2f}x the usual way (goal >= 3x); batched sampling "
          f"{result['usual_vs_per_sample']:.2f}x one generate per sample; identical samples: {same_samples}; "
          f"max score difference {max_diff:.2e} (goal < 1e-4)")
    if not same_samples or max_diff >= 1e-4:
        raise SystemExit("syco's pool does not match the usual way")


if __name__ == "__main__":
    main()
