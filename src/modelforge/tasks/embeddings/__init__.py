"""Tasks of the embeddings family (see docs/ARCHITECTURE.md); families never import one another."""
