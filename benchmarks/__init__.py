"""medvl benchmarks: each module prints ratios against a baseline run in the same process."""
