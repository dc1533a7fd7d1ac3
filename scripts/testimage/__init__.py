"""Builds the tiny bootable test image (see scripts/build-test-image.py)."""
