"""Tasks of the seq2seq family (see docs/ARCHITECTURE.md); families never import one another."""
