"""LoRA adapters: training, replay mixing, forgetting guard, files with checksums."""
