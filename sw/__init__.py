"""PyTorch compression (SmartDeal, block-circulant, ADMM, block pruning), export and the integer golden model."""
