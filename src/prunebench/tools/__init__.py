"""Command lines that measure and check the engine (leaves: nothing in the package imports them)."""
