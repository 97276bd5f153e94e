"""The web side of zoo: ``zoo ui`` (app.py, Starlette) and the figures ``zoo report`` shares with it.

Importing this package imports nothing heavy: app.py (starlette, jinja2) is imported by ``zoo ui`` only.
"""
