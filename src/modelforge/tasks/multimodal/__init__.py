"""Tasks of the multimodal family — images with text (see docs/ARCHITECTURE.md); families never import one another."""
