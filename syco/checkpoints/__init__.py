"""Sycophancy along a PPO run: every saved policy adapter evaluated (`evaluate.py
method=checkpoints`), against PPO step and measured KL, with paired rises, PM scores and plots."""
