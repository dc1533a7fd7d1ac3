"""`microcloud init` on the daemon side: the preseed schema and its validation, disk
discovery, the --auto plan and the resumable init state machine."""
