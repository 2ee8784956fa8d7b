"""Meta-learned optimizers."""
