"""website_health_check: checks every configured site on a schedule and mails when one goes
DOWN, becomes DEGRADED or RECOVERS (see docs/website_health_check.md).

Rooms: event (the schedule), config, service (SSM and the HTTP/TLS probes), decide (the site
list, what a check means, when a change is worth a mail), store (the site-state table),
run (plan and act for autopilot.runner), report (the mail and the numbers), app (the handler).
"""
