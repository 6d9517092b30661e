"""Per-domain Chroma retrieval with versioned visibility."""
