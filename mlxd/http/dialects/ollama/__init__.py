"""Ollama's API: a translator onto the common request core, NDJSON encoders and the model listings."""
