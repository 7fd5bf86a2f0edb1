"""medvl.models.encoders."""
