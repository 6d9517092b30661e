"""The Shadow trainer: cleaning, mixing and training of per-domain LoRA adapters."""
