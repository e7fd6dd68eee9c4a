"""Preference tuning of a GPT: preference pairs (JSONL), Direct Preference Optimization, and its evaluation."""
