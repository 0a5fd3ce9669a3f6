"""Click commands, one module per feature; each imports heavy libraries inside the command body."""
