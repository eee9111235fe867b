"""idle_stopper: stops running instances that are idle, or past their StopAfter lifetime."""
