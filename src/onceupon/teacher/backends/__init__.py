"""Teacher backends: heuristic (offline default), openai, transformers, vllm."""
