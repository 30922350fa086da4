"""Data folder shipped inside the slidesparse wheel (mapped by pyproject.toml package-dir)."""
