"""owner_backfill: an ops-autopilot automation, scaffolded by `make new-automation`.

What it does: docs/owner_backfill.md. Its rooms: docs/adding-an-automation.md."""
