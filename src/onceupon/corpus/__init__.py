"""Corpora: plain-text files, Hugging Face datasets, and the built-in storyworld generator."""
