"""Ingestion: documents, feedback and examples sent to /ingest."""
