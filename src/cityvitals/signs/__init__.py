"""signs."""
