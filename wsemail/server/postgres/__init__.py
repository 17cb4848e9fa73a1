"""The PostgreSQL store: one domain on several nodes (and several workers per machine) over
one PostgreSQL database, beside the embedded SQLite default. See store.py."""
