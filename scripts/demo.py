"""Placeholder: the real demo is written elsewhere."""
print("demo: not yet")
