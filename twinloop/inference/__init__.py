"""Answering: the answer service, retrieval and readiness."""
