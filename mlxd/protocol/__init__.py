"""OpenAI wire types shared by the HTTP layer and the CLI."""
