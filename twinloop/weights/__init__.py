"""Model weights on disk: the folders the engines serve, PEFT trains on and RAG embeds with."""
