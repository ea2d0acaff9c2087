"""Data sets, generated locally or read from folders the user already has; no downloads."""
