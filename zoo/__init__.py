"""The zoo table, model-card template and publishing helpers."""
