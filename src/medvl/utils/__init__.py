"""Small shared utilities: atomic file writes, hashing, seeding, run directories."""
