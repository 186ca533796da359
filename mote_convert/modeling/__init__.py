"""MoTE modules for transformers models (load, run, train)."""
