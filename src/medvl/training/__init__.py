"""medvl.training."""
