"""What runs inside Apache: the WSGI handlers (app.py, loaded by file path).

app.py imports nothing but the standard library and nothing of this package.
"""
