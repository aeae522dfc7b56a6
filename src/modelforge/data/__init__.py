"""Data: user file formats, the embedded datasets, tokenizers, transforms and splits."""
