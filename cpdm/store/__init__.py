"""The workspace: SQLite schema and migrations, content-addressed images, the serialised writer and time helpers."""
