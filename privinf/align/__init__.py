"""Safety alignment (LoRA SFT, DPO, QuadA): training data, pairs, trainers, adapters."""
