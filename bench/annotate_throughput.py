"""LM annotation throughput: every LM feature of N hh-rlhf pairs with the shared prefix (the dialogue
and both responses encoded once per order, every feature's question packed behind them) against one
whole prompt per (pair, feature, order), on the same model and the same token ids.

Both modes run in one process on one loaded model (SmolLM2-135M-Instruct by default), alternating
shared, naive, shared, ... for --rounds rounds after one untimed warm-up of each. The ratio is the
median over rounds of naive / shared seconds within a round (neighbours in time, so that load from
other jobs on a shared machine moves both alike); process CPU seconds are reported beside wall time. The values of the two modes must be identical: where float noise moves a p across a
margin boundary, the number of differing values and the largest |p difference| are reported.

    python bench/annotate_throughput.py                    # 8 pairs, 3 rounds, CPU
    python bench/annotate_throughput.py --pairs 64 --device cuda
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def model_cfg() -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return OmegaConf.to_container(compose(config_name="model/smollm2").model, resolve=True)


def load_items(args: argparse.Namespace) -> list:
    """N pairs, a seeded sample of those whose transcript is at most --max-chars long."""
    from syco.data.hh_rlhf import load_hh_rlhf
    from syco.data.pairs import BadRows

    pairs = [p for p in load_hh_rlhf(args.data, BadRows("skip"))
             if sum(len(m["content"]) for m in p.prompt) + len(p.chosen) + len(p.rejected) <= args.max_chars]
    random.Random(args.seed).shuffle(pairs)
    if len(pairs) < args.pairs:
        raise SystemExit(f"only {len(pairs)} pairs within --max-chars={args.max_chars}; asked for {args.pairs}")
    return [(p.prompt, p.chosen, p.rejected) for p in pairs[: args.pairs]]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per forward pass (both modes)")
    ap.add_argument("--max-chars", type=int, default=3000, help="longest transcript (dialogue + both responses)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/hh_rlhf/helpful-base/test.jsonl.gz"))
    args = ap.parse_args()

    import torch

    from syco.analysis.annotator import LMAnnotator
    from syco.analysis.lm_features import LM_FEATURES

    features = list(LM_FEATURES)
    annotator = LMAnnotator(model_cfg(), device=args.device, batch_tokens=args.batch_tokens)
    items = load_items(args)
    encoded = annotator.encode(items, features)
    shared_tokens = sum(len(p.prefix) + sum(map(len, p.suffixes)) for p in encoded)
    naive_tokens = sum(len(p.prefix) * len(p.suffixes) + sum(map(len, p.suffixes)) for p in encoded)

    def run(shared: bool, n: int) -> tuple[float, float, object]:
        annotator.shared_prefix = shared
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        result = annotator.annotate(items[:n], features)
        sync()
        return time.perf_counter() - start, time.process_time() - cpu, result

    for shared in (True, False):  # warm-up: kernels, allocator, tokenizer caches
        run(shared, 1)
    seconds: dict[str, list[float]] = {"shared": [], "naive": []}
    cpu_seconds: dict[str, list[float]] = {"shared": [], "naive": []}
    results: dict[str, list] = {"shared": [], "naive": []}
    for rnd in range(args.rounds):
        for mode in ("shared", "naive"):
            s, cpu, result = run(mode == "shared", len(items))
            seconds[mode].append(s)
            cpu_seconds[mode].append(cpu)
            results[mode].append(result)
            print(f"round {rnd + 1} {mode:6s}: {s:7.2f} s ({cpu:7.2f} CPU s)  {len(items) / s:7.3f} pairs/s", flush=True)

    med = {m: statistics.median(v) for m, v in seconds.items()}
    ratios = [n / s for s, n in zip(seconds["shared"], seconds["naive"])]
    cpu_ratios = [n / s for s, n in zip(cpu_seconds["shared"], cpu_seconds["naive"])]
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"\nmodel={annotator.name} device={device} pairs={len(items)} features={len(features)} "
          f"orders=2 rounds={args.rounds} batch_tokens={args.batch_tokens}")
    print(f"tokens per run: shared {shared_tokens}, naive {naive_tokens} ({naive_tokens / shared_tokens:.1f}x)")
    for m in ("shared", "naive"):
        print(f"{m:6s}: {len(items) / med[m]:8.3f} pairs/s  ({len(items) * len(features) / med[m]:8.1f} "
              f"pair-features/s, median {med[m]:.2f} s)")
    print(f"ratio shared/naive (median of rounds): {statistics.median(ratios):.2f}x wall (goal >= 5x), "
          f"{statistics.median(cpu_ratios):.2f}x CPU time; per round: " + ", ".join(f"{r:.2f}x" for r in ratios))

    ref = results["shared"][0]
    differing, max_p = 0, 0.0
    for r in results["shared"] + results["naive"]:
        differing = max(differing, int(((r.values != ref.values) & ~(np.isnan(r.values) & np.isnan(ref.values))).sum()))
        max_p = max(max_p, float(np.nanmax(np.abs(r.p - ref.p))) if np.isfinite(ref.p).any() else 0.0)
    same = differing == 0
    print(f"values identical across modes and rounds: {'yes' if same else 'no'} "
          f"({differing} of {ref.values.size} differ; max |p difference| {max_p:.2e})")
    spread = np.abs(ref.p - 0.5)
    print(f"failures: {ref.failures or 'none'}; values: "
          + ", ".join(f"{v:+.0f}: {int((ref.values == v).sum())}" for v in (-1, 0, 1))
          + f"; |p - 0.5| median {np.nanmedian(spread):.3f}, max {np.nanmax(spread):.3f} (margin {annotator.margin:g})")


if __name__ == "__main__":
    main()
