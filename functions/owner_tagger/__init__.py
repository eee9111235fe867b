"""owner_tagger: tags what was created in EC2 with who created it, from CloudTrail events."""
