"""medvl.data.adapters."""
