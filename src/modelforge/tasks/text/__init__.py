"""Tasks of the text family (see docs/ARCHITECTURE.md); families never import one another."""
