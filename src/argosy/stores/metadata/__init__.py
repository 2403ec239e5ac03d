"""The metadata store: SQLAlchemy tables, the database connection, and query functions."""
