"""What the held-out labels of the embedded default reward: for each belief condition, the share of
held-out pairs whose chosen response is the truthful one, and the held-out accuracy of two reference
PMs on the same pairs (an agreeing PM that always prefers the response matching the user's stated
belief, and a truthful PM that always prefers the true statement).

    .venv/bin/python docs/results/preference-models/label_ceilings.py [hydra overrides of train.py]

It composes train.py's config (data, split and seed as a PM run would), builds the same held-out
pairs and reads each pair's labels back from the rater's candidates; no model is loaded.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import syco.data.beliefs as B
from syco.data.preference import build_preference_splits

CONDITIONS = ("false_belief", "true_belief", "no_belief")
TEMPLATE = re.compile(r"\((\w+), template (\d+)\)$")


def truthful_and_agreeing(pair, item) -> tuple[bool, bool]:
    """Whether the chosen response of a rated pair is the truthful one, and the one agreeing with the user."""
    condition, variant = TEMPLATE.search(pair.source).groups()
    _, (a, matches_a, truthful_a), (b, matches_b, truthful_b) = B.rated_candidates(item, condition, int(variant))
    if pair.chosen == a:
        return bool(truthful_a), bool(matches_a)
    assert pair.chosen == b, f"{pair.source}: chosen response is neither candidate"
    return bool(truthful_b), bool(matches_b)


def main(overrides: list[str]) -> None:
    conf = Path(__file__).resolve().parents[3] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    splits = build_preference_splits(OmegaConf.to_container(cfg.data, resolve=True),
                                     OmegaConf.to_container(cfg.pm, resolve=True), seed=int(cfg.seed))
    items = {it.group: it for it in B.load_items(cfg.data.sources.beliefs.facts, cfg.data.sources.beliefs.misconceptions)}
    print("| condition | held-out pairs | chosen is truthful | agreeing PM | truthful PM |")
    print("|---|---|---|---|---|")
    totals = {"agreeing": 0.0, "truthful": 0.0, "n": 0}
    for condition in CONDITIONS:
        flags = [truthful_and_agreeing(p, items[p.group]) for p in splits.val if p.kind == condition]
        truthful = sum(t for t, _ in flags) / len(flags)
        # with no stated belief both responses "agree" equally: the agreeing PM is a coin flip there
        agreeing = 0.5 if condition == "no_belief" else sum(a for _, a in flags) / len(flags)
        totals["agreeing"] += agreeing * len(flags)
        totals["truthful"] += truthful * len(flags)
        totals["n"] += len(flags)
        print(f"| {condition} | {len(flags)} | {truthful:.3f} | {agreeing:.3f} | {truthful:.3f} |")
    n = totals["n"]
    print(f"| all | {n} | | {totals['agreeing'] / n:.3f} | {totals['truthful'] / n:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
