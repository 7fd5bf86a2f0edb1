"""medvl.evaluation."""
