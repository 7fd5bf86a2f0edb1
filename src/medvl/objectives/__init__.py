"""medvl.objectives."""
