"""Best-of-n: sample pools, PM selection, metrics against optimization strength."""
