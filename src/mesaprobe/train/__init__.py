"""Training: the loop every algorithm shares, the algorithms, checkpoints and stacked seeds."""
