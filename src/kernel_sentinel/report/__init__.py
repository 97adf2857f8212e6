"""Renderers: one module per output format, each a pure function from a record to text."""
