"""Offline reinforcement learning: environments, scripted experts and trajectory datasets
for the Decision Transformer."""
