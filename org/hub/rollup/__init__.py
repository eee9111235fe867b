"""The organisation's roll-up hub (org/hub.yaml): member stacks' run summaries in, one daily
mail out. Standard library and boto3 only (the Lambda runtime's), no layer."""
