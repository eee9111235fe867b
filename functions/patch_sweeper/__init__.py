"""patch_sweeper: weekly AWS-RunPatchBaseline sweeps through SSM, one digest per sweep."""
