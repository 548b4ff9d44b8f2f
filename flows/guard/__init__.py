"""guard stage."""
