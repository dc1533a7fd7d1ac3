"""Thin handlers: decode → call a service → return API types. One module per resource."""
