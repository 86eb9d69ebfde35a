"""Evaluation: BabyLM zero-shot tasks and story quality, per checkpoint."""
