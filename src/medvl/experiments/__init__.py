"""medvl.experiments."""
