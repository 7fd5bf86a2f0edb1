"""medvl.cli."""
