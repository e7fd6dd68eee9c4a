"""Vision domain: images cut into patch tokens, the ViT classifier, image data and the classify tool."""
