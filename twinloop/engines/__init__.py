"""The vLLM engines: their processes on this machine and the client that speaks their HTTP API."""
