"""healers: everything that changes the host."""
