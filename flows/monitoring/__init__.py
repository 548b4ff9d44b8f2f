"""monitoring stage."""
