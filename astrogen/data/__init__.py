"""Data shipped inside the package (see ``cosmos/PROVENANCE.md``)."""
from pathlib import Path

__all__ = ["cosmos_dir"]


def cosmos_dir() -> Path:
    """Folder of the shipped HST/COSMOS RealGalaxyCatalog files."""
    return Path(__file__).resolve().parent / "cosmos"
