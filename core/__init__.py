"""Process-wide plumbing: settings, database engine, Temporal client, logging."""
