"""The multimodal family: tasks that read an image and text together (image captioning, image–text retrieval)."""
