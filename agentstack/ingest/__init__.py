"""Document ingestion: load → scrub PII → chunk → embed → store."""
