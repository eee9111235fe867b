"""Two local sites, one healthy and one broken: the DOWN mail, then the fix and RECOVERED."""

from __future__ import annotations

import json

from demo import websites
from demo.sandbox import Sandbox, step

TITLE = "two local sites, one breaks and recovers"
EVENT = "website_health_check/eventbridge.scheduled"


def run(sb: Sandbox) -> None:
    shop, blog = websites.start(), websites.start(healthy=False)
    shop_url = f"http://127.0.0.1:{shop.server_port}/ok"
    blog_url = f"http://127.0.0.1:{blog.server_port}/toggle"
    parameter = f"/{sb.stack_name}/website-health-check/sites"
    sb.client("ssm").put_parameter(
        Name=parameter,
        Type="String",
        Overwrite=True,
        Value=json.dumps([{"url": u, "expect_text": "Welcome"} for u in (shop_url, blog_url)]),
    )
    table = sb.client("dynamodb").create_table(
        TableName=f"{sb.stack_name}-WebsiteHealthCheckStateTable",
        AttributeDefinitions=[{"AttributeName": "url", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "url", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )["TableDescription"]["TableName"]
    env = {**sb.base_env(), "SITES_PARAMETER": parameter, "STATE_TABLE": table, "FAILURES_BEFORE_DOWN": "2"}
    print(f"Sites: {shop_url} (healthy), {blog_url} (answers 503).")
    print("A site is reported DOWN after 2 failed checks in a row (WebsiteHealthCheckFailuresBeforeAlarm=2).")
    try:
        for n in (1, 2, 3):
            step(f"Scheduled run {n}")
            result = sb.invoke("website_health_check", EVENT, env)
            report(result)
            sb.print_mails()
        step("Someone fixes the blog; next scheduled run")
        blog.healthy = True  # type: ignore[attr-defined]
        result = sb.invoke("website_health_check", EVENT, env)
        report(result)
        sb.print_mails()
    finally:
        shop.shutdown()
        blog.shutdown()


def report(result: dict[str, object]) -> None:
    print(
        f"  checked {result['Checked']} sites, {result['SitesDown']} down now; "
        f"state changes mailed: {result['Changed']}"
    )
