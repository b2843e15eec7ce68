"""Preference models: training (Lightning), export, and the scoring API used by best-of-N and PPO."""

from syco.pm.model import PreferenceModel, load

__all__ = ["PreferenceModel", "load"]
