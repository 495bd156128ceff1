"""OpenAI's Chat Completions and Completions: encoders from output events to its JSON and SSE."""
