"""Atomic file writing, FITS products with provenance, PNG previews."""
