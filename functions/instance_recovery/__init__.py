"""instance_recovery: an ops-autopilot automation, scaffolded by `make new-automation`.

What it does: docs/instance_recovery.md. Its rooms: docs/adding-an-automation.md."""
