"""snapshot_rotator: scheduled EBS snapshots of opted-in volumes, with retention that never loses a backup."""
