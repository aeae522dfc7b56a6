"""Tasks of the speech family (see docs/ARCHITECTURE.md); families never import one another."""
