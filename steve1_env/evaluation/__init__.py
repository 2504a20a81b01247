"""Evaluation: run task sets many times, store each trial's result, and report success rates."""
