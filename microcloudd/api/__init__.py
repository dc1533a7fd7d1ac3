"""The API declaration shared by the daemon and the CLI.

Nothing here imports anything else of microcloudd: the CLI ships with this package only.
"""
