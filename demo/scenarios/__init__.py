"""One module per automation: TITLE and run(sandbox)."""
