"""Catalogs: canonical columns, file readers with column mapping, and the COSMOS sampler."""
