"""healbot: the daemon; observe, group, decide, talk."""
