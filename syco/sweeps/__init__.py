"""Seeds as the unit of evidence: a sweep's best-of-n results and PPO checkpoint evaluations,
grouped by everything but the seed, aggregated into curves with intervals across seeds
(`scripts/aggregate_seeds.py`)."""
