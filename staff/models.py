"""The staff console keeps no tables of its own: what it changes belongs to studio, billing and usage."""
