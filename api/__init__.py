"""The FastAPI gateway: thin routes over twinloop's services."""
