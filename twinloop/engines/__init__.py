"""Running the vLLM engine processes of the two slots on this machine."""
