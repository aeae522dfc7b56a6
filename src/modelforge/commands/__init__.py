"""Bodies of `modelforge` commands that are more than a call into the API (the CLI side, the top floor)."""
