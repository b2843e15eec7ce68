"""Assemble preference data from config: sources -> held-out split -> (anti-sycophancy) -> tokens."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Sampler

from syco.core.config_checks import EXAMPLES
from syco.core.packing import pack_rows
from syco.core.schedule import batches_per_epoch
from syco.data.beliefs import anti_sycophancy_pairs, load_items, probe_pairs, split_items
from syco.data.chat import ChatFormatter
from syco.data.pairs import KINDS, BadRowError, BadRows, PreferencePair, is_heldout
from syco.data.policy_pairs import policy_anti_sycophancy_pairs

log = logging.getLogger(__name__)


@dataclass
class PreferenceSplits:
    train: list[PreferencePair]
    val: list[PreferencePair]  # held-out pairs of the training sources
    probe: list[PreferencePair]  # held-out misconceptions: truthful correction vs agreement
    bad_rows: BadRows

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, pairs in (("train", self.train), ("val", self.val), ("probe", self.probe)):
            for p in pairs:
                out[f"{name}/{p.kind}"] = out.get(f"{name}/{p.kind}", 0) + 1
        return out


def training_side(data_cfg: Mapping[str, Any]) -> Callable[[str], bool]:
    """Whether a group falls on the training side of the held-out split that `data_cfg` defines."""
    fraction, split_seed = float(data_cfg.get("heldout_fraction", 0.2)), int(data_cfg.get("split_seed", 0))
    return lambda group: not is_heldout(group, fraction, split_seed)


def build_preference_splits(data_cfg: Mapping[str, Any], pm_cfg: Mapping[str, Any], seed: int = 0) -> PreferenceSplits:
    bad_rows = BadRows(data_cfg.get("on_bad_row", "error"))
    fraction = float(data_cfg.get("heldout_fraction", 0.2))
    split_seed = int(data_cfg.get("split_seed", 0))
    sources = data_cfg.get("sources") or {}
    if not sources:
        raise ValueError("data.sources is empty: nothing to train on")
    train: list[PreferencePair] = []
    val: list[PreferencePair] = []
    for name, src in sources.items():
        if src is None:
            continue
        unset = [k for k in src.keys() if OmegaConf.is_missing(src, k)] if OmegaConf.is_config(src) else []
        if unset:
            key = f"data.sources.{name}.{unset[0]}"
            raise ValueError(f"{key}=???: required and unset; e.g. "
                             f"{EXAMPLES.get(key, f'python train.py ... {key}=<value>')}")
        loader = instantiate(src)
        pairs = loader(bad_rows=bad_rows, seed=seed)
        if not pairs:
            raise ValueError(f"data source {name!r} produced no pairs")
        n_val = len(val)
        for pair in pairs:
            (val if is_heldout(pair.group, fraction, split_seed) else train).append(pair)
        log.info("source %s: %d pairs, %d held out", name, len(pairs), len(val) - n_val)
    rng = random.Random(seed)
    max_train = data_cfg.get("max_train_pairs")
    if max_train is not None and len(train) > max_train:
        train = rng.sample(train, int(max_train))
    max_val = data_cfg.get("max_val_pairs")
    if max_val is not None and len(val) > max_val:
        val = random.Random(split_seed).sample(val, int(max_val))
    # anti-sycophancy pairs are a training intervention; keep them out of validation so that every
    # PM variant is measured on the same held-out pairs
    val = [p for p in val if p.kind != "anti_sycophancy"]

    anti = pm_cfg.get("anti_sycophancy") or {}
    ratio = float(anti.get("ratio") or 0.0)
    n_anti = round(ratio * len(train)) if ratio > 0 else 0
    extra: list[PreferencePair] = []
    if n_anti and anti.get("samples"):  # first from the policy's own samples (data=policy_beliefs)
        extra = policy_anti_sycophancy_pairs(anti["samples"], n_anti, bad_rows, training_side(data_cfg), seed=seed,
                                             tasks=anti.get("tasks"))
        log.info("pm=%s: %d anti-sycophancy pairs from the policy's samples", pm_cfg.get("variant"), len(extra))
    if len(extra) < n_anti and (anti.get("facts") or anti.get("misconceptions")):  # the rest templated
        items = load_items(anti.get("facts"), anti.get("misconceptions"), bad_rows)
        items = split_items(items, fraction, split_seed, heldout=False)
        extra += anti_sycophancy_pairs(items, n_anti - len(extra), seed=seed)
    if n_anti and not extra:
        raise ValueError(f"pm={pm_cfg.get('variant')}: anti_sycophancy.ratio={ratio} but no anti-sycophancy pairs "
                         "could be made (set anti_sycophancy.facts/misconceptions or samples)")
    if extra:
        log.info("pm=%s: adding %d anti-sycophancy pairs (ratio %.2f)", pm_cfg.get("variant"), len(extra), ratio)
        train = train + extra

    probe_cfg = data_cfg.get("probe") or {}
    probe: list[PreferencePair] = []
    if probe_cfg.get("misconceptions"):
        items = load_items(None, probe_cfg["misconceptions"], bad_rows)
        items = split_items(items, fraction, split_seed, heldout=True)
        probe = probe_pairs(items, templates=int(probe_cfg.get("templates", 3)))
    if not train:
        raise ValueError("no training pairs left after the held-out split")
    bad_rows.log_summary()
    return PreferenceSplits(train, val, probe, bad_rows)


# --- tokens -----------------------------------------------------------------------------------
@dataclass
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float
    kind: int  # index into KINDS

    @property
    def packed_length(self) -> int:
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    @property
    def unpacked_tokens(self) -> int:
        """Tokens of the two full sequences (prompt + chosen, prompt + rejected), as a reward
        trainer without prompt sharing would process them."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


def encode_pairs(pairs: Sequence[PreferencePair], formatter: ChatFormatter, max_length: int,
                 bad_rows: BadRows) -> list[EncodedPair]:
    """Tokenize; a prompt longer than max_length is a bad row; responses are cut to fit (and counted)."""
    out = []
    cache: dict[tuple, list[int]] = {}
    for pair in pairs:
        key = tuple((m["role"], m["content"]) for m in pair.prompt)
        if key not in cache:
            cache[key] = formatter.prompt_ids(list(pair.prompt))
        prompt_ids = cache[key]
        room = max_length - len(prompt_ids)
        if room < 2:
            bad_rows.handle(BadRowError(pair.source, "prompt", f"prompt longer than max_length={max_length}",
                                        f"{len(prompt_ids)} tokens"))
            continue
        chosen, rejected = formatter.responses_ids([pair.chosen, pair.rejected])
        if len(chosen) > room or len(rejected) > room:
            if chosen[:room] == rejected[:room]:  # a degenerate pair once cut: the same tokens chosen and rejected
                bad_rows.handle(BadRowError(pair.source, "rejected", "chosen and rejected are identical once cut to "
                                            f"max_length={max_length}", f"{room} response tokens fit"))
                continue
            bad_rows.note(f"responses truncated to max_length={max_length}")
        out.append(EncodedPair(prompt_ids, chosen[:room], rejected[:room], pair.margin, KINDS.index(pair.kind)))
    return out


def collate_pairs(batch: Sequence[EncodedPair], pad_token_id: int, padding_side: str = "right",
                  share_rows: bool = True) -> dict[str, Any]:
    """One group [prompt, chosen, rejected] per pair; with share_rows, short pairs share a row (no
    row longer than the longest pair), which removes most padding."""
    packed = pack_rows([(e.prompt_ids, [e.chosen_ids, e.rejected_ids]) for e in batch], pad_token_id, padding_side,
                       row_capacity=0 if share_rows else None)
    return {
        "packed": packed,
        "margin": torch.tensor([e.margin for e in batch], dtype=torch.float32),
        "kind": torch.tensor([e.kind for e in batch], dtype=torch.long),
        "unpacked_tokens": torch.tensor(sum(e.unpacked_tokens for e in batch)),
    }


class EpochSampler(Sampler[int]):
    """Seeded random order per epoch, optionally length-grouped (batches drawn from sorted
    mega-batches so that similar lengths meet: less padding, as transformers' group_by_length), dealt
    out to `ranks` processes, and resumable.

    Distributed: the order is laid out in global batches of batch_size * ranks (the single-process
    order at that batch size) and rank r takes every ranks-th index, so the ranks' k-th batches
    together are exactly the k-th global batch; the order is padded from its start to a multiple of
    `ranks` (every rank takes the same number of steps), as torch's DistributedSampler does.

    Resumable: with `position` (-> batches this rank already trained, counted over the whole run),
    each iteration starts in the epoch that count falls in, after the batches of it already trained,
    so a job restarted from a checkpoint taken anywhere (mid-epoch, at an epoch's end, at a
    `max_steps` stop) sees exactly the batches the uninterrupted run would have seen next."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group_by_length: bool = True,
                 mega_batches: int = 50, position: Callable[[], int] | None = None, batches_per_epoch: int = 0,
                 ranks: int = 1, rank: int = 0):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.global_batch = batch_size * ranks
        self.mega = self.global_batch * mega_batches
        self.epoch = 0
        self.position = position
        self.batches_per_epoch = batches_per_epoch
        self.ranks, self.rank = ranks, rank

    def set_epoch(self, epoch: int) -> None:
        """Lightning's per-epoch call; ignored when `position` tells the epoch (see the class)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.ranks)

    def order(self, epoch: int) -> list[int]:
        """Every index once, in this epoch's order (all ranks together)."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if not self.group_by_length:
            return order
        batches = []
        for start in range(0, len(order), self.mega):
            chunk = sorted(order[start : start + self.mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.global_batch] for i in range(0, len(chunk), self.global_batch)]
        return [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]

    def rank_order(self, epoch: int) -> list[int]:
        """This rank's share of the epoch's order."""
        order = self.order(epoch)
        if self.ranks == 1:
            return order
        padded = order + order[: (-len(order)) % self.ranks]
        return padded[self.rank :: self.ranks]

    def __iter__(self) -> Iterator[int]:
        epoch, skip = self.epoch, 0
        if self.position is not None and self.batches_per_epoch > 0:
            epoch, done = divmod(self.position(), self.batches_per_epoch)
            self.epoch = epoch
            skip = done * self.batch_size
        yield from self.rank_order(epoch)[skip:]


class PreferenceDataModule(L.LightningDataModule):
    def __init__(self, splits: PreferenceSplits, formatter: ChatFormatter, max_length: int, batch_size: int = 8,
                 eval_batch_size: int = 16, num_workers: int = 0, group_by_length: bool = True, seed: int = 0,
                 share_rows: bool = True):
        super().__init__()
        self.splits = splits
        self.formatter = formatter
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.seed = seed
        self.share_rows = share_rows
        self.train: list[EncodedPair] = []
        self.val: list[EncodedPair] = []
        self.probe: list[EncodedPair] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train or self.val:
            return
        bad = self.splits.bad_rows
        self.train = encode_pairs(self.splits.train, self.formatter, self.max_length, bad)
        self.val = encode_pairs(self.splits.val, self.formatter, self.max_length, bad)
        self.probe = encode_pairs(self.splits.probe, self.formatter, self.max_length, bad)
        bad.log_summary()
        if not self.train:
            raise ValueError("every training pair was dropped while tokenizing (see the skipped-row log)")

    def _collate(self, batch: Sequence[EncodedPair]) -> dict[str, Any]:
        return collate_pairs(batch, self.formatter.tokenizer.pad_token_id, share_rows=self.share_rows)

    def train_batches(self, world_size: int = 1, limit: int | float = 1.0) -> int:
        """Batches per epoch and rank, known before any loader is built (the schedule's length)."""
        return batches_per_epoch(len(self.train), self.batch_size, world_size, limit)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        position, per_epoch, ranks, rank = None, 0, 1, 0
        if trainer is not None:
            # where the run stands in the data, read when each epoch's iteration starts: a resumed
            # run restarts in the epoch and at the batch it stopped at (see EpochSampler)
            def position() -> int:
                return trainer.fit_loop.epoch_loop.batch_progress.total.processed

            per_epoch = self.train_batches(trainer.world_size, trainer.limit_train_batches)
            ranks, rank = trainer.world_size, trainer.global_rank
        # the sampler shards the data itself (the trainers run with use_distributed_sampler=False)
        sampler = EpochSampler([e.packed_length for e in self.train], self.batch_size, self.seed, self.group_by_length,
                               position=position, batches_per_epoch=per_epoch, ranks=ranks, rank=rank)
        return DataLoader(self.train, batch_size=self.batch_size, sampler=sampler, collate_fn=self._collate,
                          num_workers=self.num_workers, drop_last=False)

    def _eval_loader(self, data: list[EncodedPair]) -> DataLoader:
        # random chunks, sorted by length inside each: little padding, and a prefix of the loader
        # (trainer.limit_val_batches for learning curves) is still a random sample of the pairs
        order = list(data)
        random.Random(0).shuffle(order)
        chunk = self.eval_batch_size * 16
        order = [e for i in range(0, len(order), chunk) for e in sorted(order[i : i + chunk], key=lambda e: e.packed_length)]
        # under DDP each rank measures its own share, none padded with repeats: counts stay exact
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(order, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                                   shuffle=False)
        return DataLoader(order, batch_size=self.eval_batch_size, shuffle=False, sampler=sampler,
                          collate_fn=self._collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        # one loader: the module tells held-out pairs from probe pairs by their kind
        return self._eval_loader(self.val + self.probe)
