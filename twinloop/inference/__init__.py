"""Answering: the engine client, the answer service and readiness."""
