"""Tasks of the vision family (see docs/ARCHITECTURE.md); families never import one another."""
