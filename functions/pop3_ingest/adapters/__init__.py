"""Small adapters between the core's ports and AWS services."""
