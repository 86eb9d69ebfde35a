"""The student: tokenizer, model presets, pretraining and checkpoints."""
