"""Storage: metadata (SQLAlchemy) and artifacts (byte stores below a content-addressed layer)."""
