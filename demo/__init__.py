"""`make demo`: every automation, run for real against a local sandbox account (moto)."""
