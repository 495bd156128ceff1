"""Anthropic's Messages API: a translator onto the common request core and an encoder of output events."""
