"""Ingestion: documents (and later feedback and examples) sent to /ingest."""
