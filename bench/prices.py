"""Price constants (USD, region us-east-1, on-demand list prices, free tiers ignored) and where
they come from. Pages looked up in November 2026; check them again before quoting."""

from __future__ import annotations

from typing import Final

REGION_OF_PRICES: Final = "us-east-1 (US East, N. Virginia); eu-west-1 is the same or within a few %"

LAMBDA_ARM_GB_SECOND: Final = 0.0000133334  # first 7.5 billion GB-s per month
LAMBDA_REQUEST: Final = 0.20 / 1_000_000
CW_CUSTOM_METRIC_MONTH: Final = 0.30  # first 10,000 metrics
CW_ALARM_MONTH: Final = 0.10  # standard resolution, per alarm metric
CW_GET_METRIC_DATA_PER_METRIC: Final = 0.01 / 1000  # per metric requested
CW_DASHBOARD_MONTH: Final = 3.00  # per dashboard; an account's first 3 are free (up to 50 metrics each)
DDB_WRITE_REQUEST_UNIT: Final = 0.625 / 1_000_000  # on-demand
DDB_READ_REQUEST_UNIT: Final = 0.125 / 1_000_000  # on-demand
SNS_PUBLISH: Final = 0.50 / 1_000_000  # per request (64 KB chunk)
SNS_EMAIL: Final = 2.00 / 100_000  # per e-mail notification
SYNTHETICS_CANARY_RUN: Final = 0.0012
ROUTE53_HEALTH_CHECK_NON_AWS_MONTH: Final = 0.75
ROUTE53_OPTIONAL_FEATURE_NON_AWS_MONTH: Final = 2.00  # each of HTTPS, string matching, fast, latency
EBS_SNAPSHOT_GB_MONTH: Final = 0.05  # standard tier; quoted, not added (see the report)

SOURCES: Final[dict[str, str]] = {
    "Lambda (arm64 GB-s, requests)": "https://aws.amazon.com/lambda/pricing/ (tiers also in "
    "https://cloudchipr.com/blog/aws-lambda-pricing)",
    "CloudWatch (custom metrics, alarms, GetMetricData, dashboards, Synthetics canary runs)": (
        "https://aws.amazon.com/cloudwatch/pricing/ (GetMetricData $0.01/1,000 metrics also in "
        "https://support.site24x7.com/portal/en/kb/articles/aws-cloudwatch-metrics-cost-calculation; "
        "$3 per dashboard also in "
        "https://www.factualminds.com/blog/amazon-cloudwatch-pricing-metrics-logs-alarms-dashboards/; "
        "$0.0012 per canary run also in "
        "https://blog.mattsbit.co.uk/2023/11/11/aws-synthetics-canaries-when-to-bite-the-bullet/)"
    ),
    "DynamoDB on-demand": (
        "https://aws.amazon.com/dynamodb/pricing/on-demand/ (US East, after the November 2024 cut, also in "
        "https://airbyte.com/data-engineering-resources/dynamodb-pricing)"
    ),
    "SNS": "https://aws.amazon.com/sns/pricing/",
    "Route 53 health checks": (
        "https://aws.amazon.com/route53/pricing/ (basic $0.50 AWS / $0.75 non-AWS endpoint, optional "
        "features $1.00 AWS / $2.00 non-AWS each, as transcribed from that page in "
        "https://github.com/api-evangelist/amazon-route53-resolver/blob/main/plans/"
        "amazon-route53-resolver-plans-pricing.yml)"
    ),
    "EBS snapshots": "https://aws.amazon.com/ebs/pricing/",
}
