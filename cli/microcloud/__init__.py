"""The microcloud command-line client (imports microcloudd.api only)."""
