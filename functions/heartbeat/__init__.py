"""The heartbeat function (ping.py): a job's ping through the function URL; not an automation."""
