"""The step runtime: what runs inside a task's process (launcher, formats, process control)."""
