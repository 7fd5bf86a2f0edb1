"""medvl.evaluation.alignment."""
